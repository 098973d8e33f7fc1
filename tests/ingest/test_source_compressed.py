"""Compressed drop files (gzip, zstd, bz2) read natively: the same rows as the plain
file, through every slow path that names a bad line, and clear errors (never a NUL
byte) when the compression setting and the file disagree."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from support import orders_source, write_csv
from winback.ingest.pipeline import ingest
from winback.ingest.sources import SourceError, Window, make_extractor

HEADER = "id,client_id,date,sum"
LINES = ("1,C1,2025-01-05 10:00:00,10.50", '2,"C2, the second",2025-01-06 11:00:00,20', "3,Пётр,2025-01-07 12:00:00,30")
EVENTS = [{"ts": "2025-01-05T10:00:00Z", "event": "page_view", "client_id": "v1", "props": {"page": "/a"}},
          {"ts": "2025-01-05T10:01:00Z", "event": "add_to_cart", "client_id": "v2"}]
EVENTS_SOURCE = {"kind": "file", "format": "jsonl",
                 "columns": {"occurred_at": "ts", "event_type": "event", "visitor_id": "client_id"}}


def compress(data: bytes, codec: str) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, codec) as stream:
        stream.write(data)
    return sink.getvalue().to_pybytes()


def drop(path, data: bytes, codec: str | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(compress(data, codec) if codec else data)
    return path


def read_all(config, entity: str) -> list[dict]:
    """Every record the extractor reads, as the shop's own columns."""
    extractor = make_extractor(config, entity)
    rows = []
    for origin in extractor.origins(Window(), {}):
        for batch in extractor.read(origin, Window()):
            rows.extend(batch.table.to_pylist())
    return rows


CSV_TEXT = ("\n".join((HEADER, *LINES)) + "\n").encode()
JSONL_TEXT = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in EVENTS).encode()


@pytest.mark.parametrize("codec, ending", [("gzip", ".gz"), ("zstd", ".zst"), ("bz2", ".bz2")])
def test_compressed_csv_and_json_lines_read_the_same_records_as_plain_files(write_config, tmp_path, codec, ending):
    """Before, a .csv.gz was read as text: 'not valid utf-8 ... (Russian exports are
    often cp1251)'; DuckDB's JSON reader guessed by the name and knew no bz2."""
    drop(tmp_path / "plain/orders/a.csv", CSV_TEXT)
    drop(tmp_path / f"packed/orders/a.csv{ending}", CSV_TEXT, codec)
    drop(tmp_path / "plain/events/e.jsonl", JSONL_TEXT)
    drop(tmp_path / f"packed/events/e.jsonl{ending}", JSONL_TEXT, codec)

    def config(folder: str):
        return write_config({"orders": orders_source(f"{folder}/orders/*"),
                             "events": {**EVENTS_SOURCE, "path": f"{folder}/events/*"}})

    plain, packed = config("plain"), config("packed")
    assert read_all(packed, "orders") == read_all(plain, "orders")
    assert len(read_all(plain, "orders")) == 3
    assert read_all(packed, "events") == read_all(plain, "events")
    assert read_all(plain, "events")[0]["client_id"] == "v1"


def test_a_zst_file_without_a_format_ending_is_read_as_its_format(write_config, tmp_path):
    drop(tmp_path / "shop/orders/2025-01.zst", CSV_TEXT, "zstd")
    config = write_config({"orders": orders_source("shop/orders/*.zst")})
    assert [r["id"] for r in read_all(config, "orders")] == ["1", "2", "3"]


def test_a_compressed_drop_loads_end_to_end(write_config, warehouse_url, tmp_path, open_warehouse):
    drop(tmp_path / "shop/orders/a.csv.gz", CSV_TEXT, "gzip")
    config = write_config({"orders": orders_source("shop/orders/*.csv.gz")}, warehouse=warehouse_url)
    [result] = ingest(config)
    assert (result["rows"], result["inserted"]) == (3, 3)
    rows = open_warehouse(config).rows("SELECT order_id, customer_id FROM orders ORDER BY order_id")
    assert [tuple(r) for r in rows] == [("1", "C1"), ("2", "C2, the second"), ("3", "Пётр")]


def test_a_broken_line_in_a_compressed_file_is_named_by_its_line(write_config, tmp_path):
    """The slow paths that find the line re-read the file: through the decompressor."""
    drop(tmp_path / "shop/orders/a.csv.gz", CSV_TEXT + b"4,C4,2025-01-08 10:00:00,40,extra\n", "gzip")
    drop(tmp_path / "shop/customers/c.csv.zst", "client_id,name\nC1,Ivan\nC2,Пётр\n".encode("cp1251"), "zstd")
    drop(tmp_path / "shop/events/e.jsonl.gz", JSONL_TEXT + b'{"ts": 1,,}\n', "gzip")
    config = write_config({
        "orders": orders_source("shop/orders/*"),
        "customers": {"kind": "file", "path": "shop/customers/*", "columns": {"customer_id": "client_id", "first_name": "name"}},
        "events": {**EVENTS_SOURCE, "path": "shop/events/*"},
    }, warehouse=f"duckdb:///{tmp_path / 'wh.duckdb'}")
    with pytest.raises(SourceError, match=r"shop/orders/a.csv.gz: line 5: expected 4 fields separated by ',', got 5"):
        ingest(config, ["orders"])
    with pytest.raises(SourceError, match=r"shop/customers/c.csv.zst: line 3: not valid utf-8"):
        ingest(config, ["customers"])
    with pytest.raises(SourceError, match=r"shop/events/e.jsonl.gz: line 3: not valid JSON"):
        ingest(config, ["events"])


@pytest.mark.parametrize("setting", ["none", "auto"])
def test_a_gzip_file_read_as_plain_gets_a_clear_error_without_nul_bytes(
        write_config, warehouse_url, tmp_path, open_warehouse, setting):
    """`auto` goes by the ending: a gzip file named .csv is read as plain too. Before,
    the error advised cp1251; with it, the header's NUL byte broke the SQL that records
    the failed run on PostgreSQL."""
    drop(tmp_path / "shop/orders/a.csv", CSV_TEXT, "gzip")
    for encoding in ("utf-8", "cp1251"):
        config = write_config({"orders": orders_source(compression=setting, encoding=encoding)},
                              warehouse=warehouse_url)
        with pytest.raises(SourceError) as failure:
            ingest(config)
        message = str(failure.value)
        assert message == (f"shop/orders/a.csv: the file is gzip-compressed but sources.orders.compression is "
                           f"{setting} (auto goes by the name's ending); set sources.orders.compression: gzip")
    stored = open_warehouse(config).rows("SELECT status, message FROM load_runs")
    assert [tuple(r) for r in stored] == [("failed", message)] * 2


def test_a_plain_file_named_as_compressed_gets_a_clear_error(write_config, tmp_path):
    drop(tmp_path / "shop/orders/a.csv.gz", CSV_TEXT)
    config = write_config({"orders": orders_source("shop/orders/*")})
    with pytest.raises(SourceError, match=r"a.csv.gz: the file is not compressed, but by its ending .gz it is "
                                          r"read as gzip; set sources.orders.compression: none"):
        read_all(config, "orders")
    drop(tmp_path / "shop/orders/a.csv.gz", CSV_TEXT, "zstd")
    with pytest.raises(SourceError, match=r"the file is zstd-compressed, but .* set sources.orders.compression: zstd"):
        read_all(config, "orders")


@pytest.mark.postgres
def test_an_error_with_a_nul_byte_from_the_data_is_recorded_on_postgresql(
        write_config, pg_schema_url, tmp_path, open_warehouse):
    """The mapping error lists the header's columns, the header has a NUL byte: before,
    recording the failed run raised psycopg's "cannot contain NUL" instead."""
    drop(tmp_path / "shop/orders/a.csv", b"id,client\x00_id,da\x1bte,sum\n1,C1,2025-01-05,10\n")
    config = write_config({"orders": orders_source()}, warehouse=pg_schema_url)
    with pytest.raises(SourceError) as failure:
        ingest(config)
    message = str(failure.value)
    # NUL and ESC stripped: what is left names the columns.
    assert message == ("shop/orders/a.csv: column 'client_id' (mapped to customer_id), 'date' (mapped to "
                       "created_at) not found; columns there: id, client_id, date, sum")
    stored = open_warehouse(config).rows("SELECT status, message FROM load_runs")
    assert [tuple(r) for r in stored] == [("failed", message)]


def test_quarantined_lines_keep_no_control_bytes(write_config, warehouse_url, tmp_path, open_warehouse):
    write_csv(tmp_path / "shop/orders/a.csv", HEADER, "1,C1,2025-01-05,10", "2,C\x002,2025-01-06,20,extra\x07")
    config = write_config({"orders": orders_source(bad_lines="quarantine", max_bad_share=0.5)},
                          warehouse=warehouse_url)
    [result] = ingest(config)
    assert result["inserted"] == 1
    row = open_warehouse(config).rows("SELECT row_number, details, raw_record FROM quarantine")[0]
    assert (row.row_number, row.details) == (3, "malformed_line: expected 4 fields, got 5")
    assert json.loads(row.raw_record) == {"line": "2,C2,2025-01-06,20,extra"}
