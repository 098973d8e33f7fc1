"""Ingest from the shop's database, end to end through extract -> validate -> load, on
DuckDB and on PostgreSQL warehouses, reading from a real SQLite file and from the real
PostgreSQL: column mapping, incremental runs by the updated-at column, queries, chunked
streaming, URLs from the environment or an Airflow Connection, and errors that name the
problem without ever showing a password."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import winback.ingest.pipeline
from winback.config import ConfigError
from winback.ingest.pipeline import ingest
from winback.ingest.sources import (
    SourceError,
    SourceUnavailable,
    Window,
    make_extractor,
)

SHOP_COLUMNS = {
    "order_id": "id",
    "customer_id": "client_id",
    "created_at": "created",
    "total_amount": "amount",
    "status": "state",
    "updated_at": "modified",
}
STATES = {"new": "pending", "done": "completed", "sent": "shipped"}
MOSCOW = ZoneInfo("Europe/Moscow")
FAKE_PASSWORD = "Fake-Passw0rd-xyz"


class Shop:
    """The shop's own database with a `shop_orders` table (id, client_id, created,
    amount, state, modified): timestamps are naive local times, as most shops store
    them, or instants (`aware`: PostgreSQL's timestamptz)."""

    def __init__(self, url: str, schema: str | None = None, aware: bool = False):
        self.url = url
        self.schema = schema  # the PostgreSQL schema the table lives in
        self.engine = sa.create_engine(url)
        self.table = sa.Table(
            "shop_orders", sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("client_id", sa.String(20)),
            sa.Column("created", sa.DateTime(timezone=aware)),
            sa.Column("amount", sa.Numeric(10, 2)),
            sa.Column("state", sa.String(20)),
            sa.Column("modified", sa.DateTime(timezone=aware)),
        )
        self.table.metadata.create_all(self.engine)

    def insert(self, *rows: tuple) -> None:
        names = [c.name for c in self.table.columns]
        with self.engine.begin() as conn:
            conn.execute(self.table.insert(), [dict(zip(names, row)) for row in rows])

    def update(self, id_: int, **values) -> None:
        with self.engine.begin() as conn:
            conn.execute(self.table.update().where(self.table.c.id == id_).values(**values))

    def dispose(self) -> None:
        self.engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shop(request, tmp_path):
    """The shop's database: an SQLite file, or a fresh schema of the real PostgreSQL."""
    if request.param == "sqlite":
        db = Shop(f"sqlite:///{tmp_path / 'shop.db'}")
    else:
        url = request.getfixturevalue("pg_schema_url")
        options = sa.engine.make_url(url).query["options"]
        db = Shop(url, schema=options.removeprefix("-csearch_path="))
    yield db
    db.dispose()


def sql_config(write_config, warehouse_url, *, timezone_="UTC", **source):
    source = {"kind": "sql", "columns": dict(SHOP_COLUMNS), "values": {"status": STATES}, **source}
    if not any(k in source for k in ("url", "url_env", "conn_id")):
        raise AssertionError("give the shop's location")
    if not any(k in source for k in ("table", "query")):
        source["table"] = "shop_orders"
    return write_config({"orders": source}, warehouse=warehouse_url, timezone=timezone_)


def local(moment: datetime, zone=MOSCOW) -> datetime:
    """A naive UTC moment as the shop's naive local time in `zone`."""
    return moment.replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_table_loads_through_its_column_mapping_in_the_configured_time_zone(
        write_config, warehouse_url, shop, open_warehouse):
    shop.insert(
        (1, "C1", datetime(2025, 1, 5, 10, 0), Decimal("100.50"), "done", datetime(2025, 1, 5, 10, 0)),
        (2, "C2", datetime(2025, 1, 6, 2, 30), Decimal("20.00"), "sent", datetime(2025, 1, 7, 12, 0, 30)),
        (3, "C1", datetime(2025, 1, 8, 23, 59), Decimal("7.25"), "new", None),
    )
    config = sql_config(write_config, warehouse_url, url=shop.url, timezone_="Europe/Moscow")
    [result] = ingest(config)
    assert (result["rows"], result["rows_valid"], result["inserted"]) == (3, 3, 3)
    wh = open_warehouse(config)
    rows = wh.rows("SELECT order_id, customer_id, created_at, total_amount, status, currency, updated_at "
                   "FROM orders ORDER BY order_id")
    # Moscow is UTC+3: the shop's naive local times are stored as UTC.
    assert [tuple(r) for r in rows] == [
        ("1", "C1", datetime(2025, 1, 5, 7, 0), Decimal("100.50"), "completed", "RUB", datetime(2025, 1, 5, 7, 0)),
        ("2", "C2", datetime(2025, 1, 5, 23, 30), Decimal("20.00"), "shipped", "RUB", datetime(2025, 1, 7, 9, 0, 30)),
        ("3", "C1", datetime(2025, 1, 8, 20, 59), Decimal("7.25"), "pending", "RUB", None),
    ]
    assert wh.scalar("SELECT source_kind FROM load_runs") == "sql"


def test_a_second_run_reads_only_rows_changed_since_the_watermark(
        write_config, warehouse_url, shop, open_warehouse):
    began = utcnow()
    shop.insert(
        (1, "C1", local(began - timedelta(days=3)), Decimal(10), "done", local(began - timedelta(days=3))),
        (2, "C2", local(began - timedelta(days=2)), Decimal(20), "new", local(began - timedelta(days=2))),
        # Changed an hour ago: in the first run's window, not in the second's.
        (3, "C3", local(began - timedelta(days=1)), Decimal(30), "new", local(began - timedelta(hours=1))),
    )
    config = sql_config(write_config, warehouse_url, url=shop.url, timezone_="Europe/Moscow")
    [first] = ingest(config)
    assert first["inserted"] == 3
    wh = open_warehouse(config)
    watermark = wh.scalar("SELECT watermark FROM watermarks WHERE entity = 'orders'")
    assert watermark >= began

    shop.update(2, state="sent", modified=local(utcnow()))
    shop.insert((4, "C4", local(utcnow()), Decimal(40), "new", local(utcnow())))
    [second] = ingest(config)
    assert (second["rows"], second["inserted"], second["updated"]) == (2, 1, 1)
    run = wh.rows("SELECT interval_start, rows_extracted FROM load_runs WHERE load_id = :id",
                  {"id": second["load_id"]})[0]
    assert tuple(run) == (watermark, 2)
    assert dict(wh.rows("SELECT order_id, status FROM orders ORDER BY order_id")) == {
        "1": "completed", "2": "shipped", "3": "pending", "4": "pending"}

    [third] = ingest(config)  # nothing changed since
    assert third["rows"] == 0


@pytest.mark.parametrize("zone", ["Europe/Berlin", "Europe/Moscow"])
@pytest.mark.parametrize("column", ["postgres-timestamptz", "postgres-timestamp", "sqlite-timestamp"])
def test_an_update_seconds_after_a_run_is_read_by_the_next_run(
        write_config, warehouse_url, tmp_path, request, monkeypatch, open_warehouse, zone, column):
    """The window bounds meet the column's own type. Before the fix they were bound as
    naive local times: PostgreSQL compared them with a timestamptz column as if they
    were in the session zone (UTC here), so the first window reached 1-3 hours past
    its end, and the next started as late: an update seconds after a run was never
    read. Naive `timestamp` columns (PostgreSQL, SQLite) take the naive local time."""
    database, kind = column.split("-")
    aware = kind == "timestamptz"
    if database == "sqlite":
        shop = Shop(f"sqlite:///{tmp_path / 'shop.db'}")
    else:
        # The session zone pinned to UTC, the server default the bug showed under.
        url = sa.engine.make_url(request.getfixturevalue("pg_schema_url"))
        options = url.query["options"]
        url = url.update_query_dict({"options": f"{options} -ctimezone=UTC"}).render_as_string(hide_password=False)
        shop = Shop(url, schema=options.removeprefix("-csearch_path="), aware=aware)
    request.addfinalizer(shop.dispose)
    tz = ZoneInfo(zone)

    def stored(moment: datetime) -> datetime:
        """A naive UTC moment as the shop stores it: an instant, or naive local time."""
        return moment.replace(tzinfo=UTC).astimezone(tz) if aware else local(moment, tz)

    clock = {"now": datetime(2025, 3, 10, 12, 0)}  # naive UTC, as the warehouse keeps time
    monkeypatch.setattr(winback.ingest.pipeline, "utcnow", lambda: clock["now"])
    run_end = clock["now"]
    shop.insert((1, "C1", stored(run_end - timedelta(days=2)), Decimal(10), "new", stored(run_end - timedelta(hours=1))))
    config = sql_config(write_config, warehouse_url, url=shop.url, timezone_=zone)
    [first] = ingest(config)
    assert first["rows"] == 1
    wh = open_warehouse(config)
    assert wh.scalar("SELECT watermark FROM watermarks") == run_end
    assert wh.scalar("SELECT updated_at FROM orders") == run_end - timedelta(hours=1)

    shop.update(1, state="sent", modified=stored(run_end + timedelta(seconds=5)))
    clock["now"] = run_end + timedelta(minutes=10)
    [second] = ingest(config)
    assert (second["rows"], second["updated"]) == (1, 1)
    assert tuple(wh.rows("SELECT status, updated_at FROM orders")[0]) == (
        "shipped", run_end + timedelta(seconds=5))
    assert wh.scalar("SELECT watermark FROM watermarks") == clock["now"]


def test_orders_never_modified_are_read_once_by_their_creation_time(
        write_config, warehouse_url, shop, open_warehouse):
    config = sql_config(write_config, warehouse_url, url=shop.url)
    shop.insert((1, "C1", datetime(2025, 1, 5, 10, 0), Decimal(10), "done", None))
    [first] = ingest(config, end=datetime(2025, 2, 1))
    assert first["inserted"] == 1
    # Created after the watermark, never modified (modified is NULL): the next run reads it.
    shop.insert((2, "C2", datetime(2025, 2, 3, 10, 0), Decimal(20), "new", None))
    [second] = ingest(config, end=datetime(2025, 3, 1))
    assert (second["rows"], second["inserted"]) == (1, 1)
    # ... and no later run reads either again.
    [third] = ingest(config, end=datetime(2025, 4, 1))
    assert third["rows"] == 0
    wh = open_warehouse(config)
    assert [tuple(r) for r in wh.rows("SELECT order_id, created_at, updated_at FROM orders ORDER BY order_id")] == [
        ("1", datetime(2025, 1, 5, 10, 0), None), ("2", datetime(2025, 2, 3, 10, 0), None)]


def test_a_query_can_stand_in_for_a_table(write_config, warehouse_url, shop, open_warehouse):
    shop.insert(
        (1, "C1", datetime(2025, 1, 5, 10, 0), Decimal(10), "done", datetime(2025, 1, 5, 10, 0)),
        (2, "C2", datetime(2025, 1, 6, 10, 0), Decimal(20), "draft", datetime(2025, 1, 6, 10, 0)),
        (3, "C3", datetime(2025, 1, 7, 10, 0), Decimal(30), "sent", datetime(2025, 1, 20, 10, 0)),
    )
    query = ("SELECT id AS order_no, client_id, created, amount * 2 AS doubled, state, modified "
             "FROM shop_orders WHERE state <> 'draft'")
    columns = {**SHOP_COLUMNS, "order_id": "order_no", "total_amount": "doubled"}
    del columns["updated_at"]
    config = sql_config(write_config, warehouse_url, url=shop.url, query=query, columns=columns,
                        incremental_column="modified")
    [result] = ingest(config, end=datetime(2025, 1, 10))
    # The draft is filtered by the query, order 3 changed after the window's end.
    assert result["rows"] == 1
    wh = open_warehouse(config)
    assert [tuple(r) for r in wh.rows("SELECT order_id, total_amount, updated_at FROM orders")] == [
        ("1", Decimal("20.00"), None)]
    assert wh.scalar("SELECT watermark FROM watermarks") == datetime(2025, 1, 10)
    [later] = ingest(config, end=datetime(2025, 2, 1))
    assert later["rows"] == 1
    assert dict(wh.rows("SELECT order_id, status FROM orders ORDER BY order_id")) == {
        "1": "completed", "3": "shipped"}


def test_a_big_table_streams_in_chunks(write_config, warehouse_url, shop, open_warehouse):
    start = datetime(2025, 1, 1)
    shop.insert(*[
        (i, f"C{i % 97}", start + timedelta(minutes=i), Decimal(i % 500) + Decimal("0.99"), "done",
         start + timedelta(minutes=i))
        for i in range(1, 2501)
    ])
    config = sql_config(write_config, warehouse_url, url=shop.url, chunk_rows=1000)
    # The extractor hands the rows over in batches of at most chunk_rows ...
    extractor = make_extractor(config, "orders")
    [origin] = extractor.origins(Window(), {})
    batches = [(b.first_row, b.table.num_rows) for b in extractor.read(origin, Window())]
    assert batches == [(1, 1000), (1001, 1000), (2001, 500)]
    # ... and every row of every batch is loaded.
    [result] = ingest(config)
    assert (result["rows"], result["inserted"]) == (2500, 2500)
    wh = open_warehouse(config)
    run = wh.rows("SELECT rows_extracted, rows_valid, rows_inserted, status FROM load_runs")[0]
    assert tuple(run) == (2500, 2500, 2500, "loaded")
    assert wh.scalar("SELECT count(DISTINCT order_id) FROM orders") == 2500
    assert wh.scalar("SELECT max(created_at) FROM orders") == start + timedelta(minutes=2500)


def test_the_url_can_come_from_an_environment_variable(
        write_config, warehouse_url, shop, monkeypatch, open_warehouse):
    shop.insert((1, "C1", datetime(2025, 1, 5, 10, 0), Decimal(10), "done", datetime(2025, 1, 5, 10, 0)))
    monkeypatch.setenv("SHOP_DB_URL", shop.url)
    config = sql_config(write_config, warehouse_url, url_env="SHOP_DB_URL")
    [result] = ingest(config)
    assert result["inserted"] == 1
    assert open_warehouse(config).scalar("SELECT customer_id FROM orders") == "C1"


@pytest.mark.postgres
def test_the_url_can_come_from_an_airflow_connection(
        write_config, warehouse_url, pg_schema_url, monkeypatch, open_warehouse):
    schema = sa.engine.make_url(pg_schema_url).query["options"].removeprefix("-csearch_path=")
    shop = Shop(pg_schema_url, schema=schema)
    try:
        shop.insert((1, "C1", datetime(2025, 1, 5, 10, 0), Decimal(10), "done", datetime(2025, 1, 5, 10, 0)),
                    (2, "C2", datetime(2025, 1, 6, 10, 0), Decimal(15), "sent", datetime(2025, 1, 6, 10, 0)))
    finally:
        shop.dispose()
    pg = sa.engine.make_url(pg_schema_url)
    # The server trusts local connections: the password is passed along but not checked.
    monkeypatch.setenv(
        "AIRFLOW_CONN_SHOP_DB",
        f"postgres://{pg.username}:{FAKE_PASSWORD}@{pg.host}:{pg.port or 5432}/{pg.database}",
    )
    config = sql_config(write_config, warehouse_url, conn_id="shop_db", table=f"{schema}.shop_orders")
    [result] = ingest(config)
    assert result["inserted"] == 2
    assert dict(open_warehouse(config).rows("SELECT order_id, status FROM orders ORDER BY order_id")) == {
        "1": "completed", "2": "shipped"}


def test_an_unreachable_database_fails_without_showing_the_password(
        write_config, warehouse_url, monkeypatch, open_warehouse):
    port = free_port()
    monkeypatch.setenv("AIRFLOW_CONN_SHOP_DB", f"postgres://shop:{FAKE_PASSWORD}@127.0.0.1:{port}/shop")
    monkeypatch.setenv("SHOP_DB_URL", f"postgresql+psycopg://shop:{FAKE_PASSWORD}@127.0.0.1:{port}/shop")
    for location in ({"conn_id": "shop_db"}, {"url_env": "SHOP_DB_URL"}):
        config = sql_config(write_config, warehouse_url, **location)
        with pytest.raises(SourceUnavailable) as failure:
            ingest(config)
        message = str(failure.value)
        assert f"shop:***@127.0.0.1:{port}/shop" in message and "sql:shop_orders" in message
        assert FAKE_PASSWORD not in message
        stored = open_warehouse(config).rows("SELECT message FROM load_runs WHERE status = 'failed'")
        assert stored and all(FAKE_PASSWORD not in r.message for r in stored)


@pytest.mark.postgres
def test_a_query_error_names_the_database_without_its_password(
        write_config, warehouse_url, pg_schema_url, monkeypatch):
    url = sa.engine.make_url(pg_schema_url).set(password=FAKE_PASSWORD)
    monkeypatch.setenv("SHOP_DB_URL", url.render_as_string(hide_password=False))
    config = sql_config(write_config, warehouse_url, url_env="SHOP_DB_URL", table="no_such_table")
    with pytest.raises(SourceError) as failure:
        ingest(config)
    message = str(failure.value)
    assert not isinstance(failure.value, SourceUnavailable)
    assert "no_such_table" in message and ":***@" in message
    assert FAKE_PASSWORD not in message


@pytest.mark.postgres
def test_a_value_the_database_cannot_convert_is_not_shown(write_config, warehouse_url, pg_schema_url, open_warehouse):
    """PostgreSQL quotes the value it could not convert; before, that line (an email
    here) went into the log and load_runs.message as it was."""
    schema = sa.engine.make_url(pg_schema_url).query["options"].removeprefix("-csearch_path=")
    shop = Shop(pg_schema_url, schema=schema)
    try:
        shop.insert((1, "ivan.petrov@mail.ru", datetime(2025, 1, 5, 10, 0), Decimal(10), "done", None))
    finally:
        shop.dispose()
    query = "SELECT id, CAST(client_id AS integer) AS client_id, created, amount, state, modified FROM shop_orders"
    config = sql_config(write_config, warehouse_url, url=pg_schema_url, query=query)
    with pytest.raises(SourceError) as failure:
        ingest(config)
    message = str(failure.value)
    assert "sql:query" in message and "invalid input syntax for type integer: (the value is not shown)" in message
    assert "ivan" not in message and "mail.ru" not in message
    assert open_warehouse(config).scalar("SELECT message FROM load_runs") == message


def test_a_mapped_column_missing_from_the_table_is_named(write_config, warehouse_url, shop):
    shop.insert((1, "C1", datetime(2025, 1, 5, 10, 0), Decimal(10), "done", datetime(2025, 1, 5, 10, 0)))
    config = sql_config(write_config, warehouse_url, url=shop.url,
                        columns={**SHOP_COLUMNS, "total_amount": "amout"})
    with pytest.raises(SourceError) as failure:
        ingest(config)
    message = str(failure.value)
    assert "'amout' (mapped to total_amount) not found" in message
    assert "sql:shop_orders" in message and "amount" in message  # the columns there
    # A wrong mapping is not worth retrying later.
    assert not isinstance(failure.value, SourceUnavailable)


def test_a_missing_updated_at_column_is_named(write_config, warehouse_url, shop):
    shop.insert((1, "C1", datetime(2025, 1, 5, 10, 0), Decimal(10), "done", datetime(2025, 1, 5, 10, 0)))
    config = sql_config(write_config, warehouse_url, url=shop.url,
                        columns={**SHOP_COLUMNS, "updated_at": "modifed"})
    with pytest.raises(SourceError) as failure:
        ingest(config)
    assert "'modifed'" in str(failure.value) and "sql:shop_orders" in str(failure.value)
    assert not isinstance(failure.value, SourceUnavailable)

    config = sql_config(write_config, warehouse_url, url=shop.url, incremental_column="changed_at")
    with pytest.raises(SourceError) as failure:
        ingest(config)
    assert "incremental column 'changed_at' not found" in str(failure.value)
    assert not isinstance(failure.value, SourceUnavailable)


def test_config_errors_name_the_key(write_config, tmp_path):
    with pytest.raises(ConfigError) as both:
        write_config({"orders": {"kind": "sql", "url": "sqlite:///shop.db", "table": "shop_orders",
                                 "query": "SELECT * FROM shop_orders", "columns": SHOP_COLUMNS}})
    assert "sources.orders: give exactly one of table, query" in str(both.value)
    with pytest.raises(ConfigError) as inline:
        write_config({"orders": {"kind": "sql", "table": "shop_orders", "columns": SHOP_COLUMNS,
                                 "url": f"postgresql+psycopg://shop:{FAKE_PASSWORD}@db.example.com/shop"}})
    assert "sources.orders" in str(inline.value) and "url must not contain a password" in str(inline.value)
    assert FAKE_PASSWORD not in str(inline.value)
    with pytest.raises(ConfigError, match="give exactly one of url, url_env, conn_id"):
        write_config({"orders": {"kind": "sql", "url": "sqlite:///shop.db", "url_env": "SHOP_DB_URL",
                                 "table": "shop_orders", "columns": SHOP_COLUMNS}})
    with pytest.raises(ConfigError, match="not a plain"):
        write_config({"orders": {"kind": "sql", "url": "sqlite:///shop.db", "columns": SHOP_COLUMNS,
                                 "table": "shop_orders; DROP TABLE shop_orders"}})
