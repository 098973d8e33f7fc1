"""The contact_outcomes entity: a call-centre export with bad rows loads the good ones,
quarantines the rest with the rules they broke, and never logs a comment, on DuckDB and
on PostgreSQL."""

from __future__ import annotations

import json
import logging
from datetime import datetime

from support import orders_source, write_csv
from winback.ingest.pipeline import ingest

HEADER = "client,channel,called_at,result,why,note"
COLUMNS = {"customer_id": "client", "channel": "channel", "contacted_at": "called_at", "outcome": "result",
           "reason": "why", "comment": "note"}
SECRET = "lives at Lenina 5 flat 12; wife Olga"


def contacts_source(**extra) -> dict:
    return {"kind": "file", "path": "shop/contacts/*.csv", "columns": dict(COLUMNS), "max_bad_share": 1.0, **extra}


def test_bad_contact_rows_are_quarantined_with_reasons_and_the_rest_loads(write_config, warehouse_url, tmp_path,
                                                                          open_warehouse, caplog):
    write_csv(tmp_path / "shop/orders/o.csv", "id,client_id,date,sum", "o1,c1,2025-01-05 10:00:00,100")
    write_csv(tmp_path / "shop/contacts/2025-03.csv", HEADER,
              f"c1,call,2025-03-01 10:00:00,agreed_to_return,price,{SECRET}",
              "c2,call,2025-03-01 11:00:00,no_answer,,",
              "c3,Call,2025-03-02 09:30:00,Refused,Quality,",  # case is not a mistake
              "c4,call,2025-03-02 10:00:00,hung_up,price,",  # unknown outcome
              f"c5,call,yesterday,reached,service,{SECRET}",  # not a timestamp
              "c6,fax,2025-03-03 10:00:00,reached,,",  # unknown channel
              "c7,sms,2025-03-03 10:00:00,reached,too_expensive,",  # unknown reason
              "c8,call,,reached,,")  # no time at all
    config = write_config({"orders": orders_source(), "contact_outcomes": contacts_source()},
                          warehouse=warehouse_url)
    with caplog.at_level(logging.DEBUG):
        _, contacts = ingest(config)
    wh = open_warehouse(config)

    assert contacts["failed_per_rule"] == {"outcome_allowed": 1, "contacted_at_parses": 1, "channel_allowed": 1,
                                           "reason_allowed": 1, "contacted_at_present": 1}
    loaded = wh.rows("SELECT customer_id, channel, contacted_at, outcome, reason, comment FROM contact_outcomes "
                     "ORDER BY customer_id")
    assert [tuple(r) for r in loaded] == [
        ("c1", "call", datetime(2025, 3, 1, 10), "agreed_to_return", "price", SECRET),
        ("c2", "call", datetime(2025, 3, 1, 11), "no_answer", None, None),
        ("c3", "call", datetime(2025, 3, 2, 9, 30), "refused", "quality", None),
    ]
    quarantined = wh.rows("SELECT row_number, rules, raw_record FROM quarantine WHERE entity = 'contact_outcomes' "
                          "ORDER BY row_number")
    assert [(r.row_number, r.rules) for r in quarantined] == [
        (4, "outcome_allowed"), (5, "contacted_at_parses"), (6, "channel_allowed"), (7, "reason_allowed"),
        (8, "contacted_at_present")]
    assert json.loads(quarantined[0].raw_record)["result"] == "hung_up"
    # Comments may name people: stored in the warehouse, never in a log line.
    assert caplog.records and SECRET not in caplog.text


def test_a_contact_exported_again_is_one_contact(write_config, warehouse_url, tmp_path, open_warehouse):
    """Without a contact id the key is customer, channel and moment: a re-export of the
    same call (its result corrected) replaces it instead of counting a second call."""
    write_csv(tmp_path / "shop/orders/o.csv", "id,client_id,date,sum", "o1,c1,2025-01-05 10:00:00,100")
    write_csv(tmp_path / "shop/contacts/a.csv", HEADER, "c1,call,2025-03-01 10:00:00,reached,,",
              "c1,sms,2025-03-01 10:00:00,reached,,")
    config = write_config({"orders": orders_source(), "contact_outcomes": contacts_source()},
                          warehouse=warehouse_url)
    ingest(config)
    write_csv(tmp_path / "shop/contacts/b.csv", HEADER, "c1,call,2025-03-01 10:00:00,agreed_to_return,delivery,")
    ingest(config)

    rows = open_warehouse(config).rows("SELECT channel, outcome, reason FROM contact_outcomes ORDER BY channel")
    assert [tuple(r) for r in rows] == [("call", "agreed_to_return", "delivery"), ("sms", "reached", None)]
