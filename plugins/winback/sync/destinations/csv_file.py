"""CSV call lists: each run writes who to call (`-add.csv`) and who no longer to call
(`-remove.csv`), or a full snapshot (`-full.csv`), for a phone team opening them in Excel.
The files are the owner's only, and no cell can run as a spreadsheet formula."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from winback.private_files import open_private, private_dir
from winback.sync.destinations.base import (
    MONEY_ATTRIBUTES,
    Destination,
    Member,
    Outcome,
    Settings,
    check_attribute_map,
)

UNIT_ROWS = 10_000  # not a platform limit: rows written (and confirmed) per call
ID_COLUMNS = ("member_key", "customer_id", "phone", "email")
EXCEL_BOM = "\ufeff"  # makes Excel read the file as UTF-8 (Cyrillic names) instead of the ANSI code page
# OWASP, "CSV Injection": a cell starting with one of these is a formula to Excel,
# LibreOffice and Google Sheets (=HYPERLINK(...) in a first name would run); a leading
# ' makes it text. E.164 phones start with "+", so they get the quote too: it keeps them
# text with their "+" (unquoted, a spreadsheet reads them as numbers and drops it).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# What a caller needs, in the order they read it: who, where the customer stands, what
# went wrong, what to offer; then the cart. Headers are the attribute names.
DEFAULT_COLUMNS = ("first_name", "lifecycle_stage", "days_since_last_order", "last_order_status",
                   "last_feedback_score", "late_deliveries", "main_category", "last_reason", "winback_offer", "predicted_clv_365d",
                   "value_tier", "offer", "cart_value", "amount_to_free_delivery", "product_ids")


class CsvOptions(Settings):
    delimiter: str = Field(default=";", min_length=1, max_length=1,
                           description="';' is what Excel expects where the decimal separator is a comma (ru)")
    excel_bom: bool = Field(default=True, description="start each file with a UTF-8 byte-order mark")
    decimal_comma: bool = Field(default=True, description="write money (cart_value ...) as 1234,50 (Russian Excel)")
    columns: dict[str, str] = Field(
        default_factory=lambda: {a: a for a in DEFAULT_COLUMNS},
        description="attribute -> column header, in file order, after member_key, customer_id, phone, email; "
                    "replaces the default (every attribute under its own name)")

    @field_validator("columns")
    @classmethod
    def _known(cls, value: dict[str, str]) -> dict[str, str]:
        return check_attribute_map(value, ID_COLUMNS)


class CsvFile(Destination):
    kind = "csv"
    channels = frozenset({"call", "sms", "email"})
    identifiers = ("phone", "email", "customer_id")
    phone_format = "e164"  # +79123456789
    attributes = DEFAULT_COLUMNS
    order_by = "predicted_clv_365d DESC NULLS LAST"  # the most valuable are called first
    batch_size = UNIT_ROWS
    removes_by_identifier = False  # removals name the member_key
    modes = ("mirror", "add_only", "replace")
    pool_slots = 4  # files only: each pair writes its own folder
    default_base_url = ""  # no HTTP: the transport it is given goes unused
    secret_names = ()
    Options = CsvOptions

    @classmethod
    def sent_attributes(cls, options: CsvOptions) -> tuple[str, ...]:
        return tuple(options.columns)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._stamp: str | None = None

    # -- files -------------------------------------------------------------------------
    def _folder(self) -> Path:
        if self.out_dir is None:
            raise ValueError("the csv destination writes under out_dir, which was not given")
        return private_dir(Path(self.out_dir))

    def _path(self, suffix: str) -> Path:
        """`<UTC time>-<suffix>.csv`, the time fixed at this run's first file so every
        call of the run appends to the same files; a second run within the same second
        gets `_2`."""
        folder = self._folder()
        if self._stamp is None:
            base = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            stamp, n = base, 1
            while any(folder.glob(f"{stamp}-*")):
                n += 1
                stamp = f"{base}_{n}"
            self._stamp = stamp
        return folder / f"{self._stamp}-{suffix}.csv"

    def _columns(self) -> tuple[str, ...]:
        return ID_COLUMNS + tuple(self.options.columns)

    def _write(self, path: Path, columns: Sequence[str], members: Iterable[Member]) -> None:
        new = not path.exists()
        with open_private(path, "a", encoding="utf-8", newline="") as handle:
            if new and self.options.excel_bom:
                handle.write(EXCEL_BOM)
            writer = csv.writer(handle, delimiter=self.options.delimiter)
            if new:
                writer.writerow([self.options.columns.get(c, c) for c in columns])
            writer.writerows([self._cell(member, column) for column in columns] for member in members)

    def _cell(self, member: Member, column: str) -> str:
        if column == "member_key":
            return _text(member.key)
        value = member.ids.get(column) if column in ID_COLUMNS else member.attributes.get(column)
        if value is None:
            return ""
        if column in MONEY_ATTRIBUTES:  # a number formatted here: never a formula
            text = f"{float(value):.2f}"
            return text.replace(".", ",") if self.options.decimal_comma else text
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # a number: never a formula, and a negative keeps its "-"
        return _text(str(value))

    # -- the protocol ----------------------------------------------------------------------
    def add(self, members: Sequence[Member]) -> Outcome:
        self._write(self._path("add"), self._columns(), members)
        return Outcome.all_accepted(members, rows_written=len(members))

    def remove(self, members: Sequence[Member]) -> Outcome:
        # Removed members carry the identifiers they were added with, no attributes.
        self._write(self._path("remove"), ID_COLUMNS, members)
        return Outcome.all_accepted(members, rows_removed=len(members))

    def replace(self, pages: Iterable[Sequence[Member]]) -> Outcome:
        """The snapshot appears under its name only once complete: a run that dies midway
        leaves a `.partial` file, never a short call list."""
        final = self._path("full")
        partial = final.with_name(final.name + ".partial")
        partial.unlink(missing_ok=True)
        outcome = Outcome(figures={"rows_written": 0})
        for page in pages:
            self._write(partial, self._columns(), page)
            outcome.merge(Outcome.all_accepted(page, rows_written=len(page)))
        if not partial.exists():  # nobody left: an empty snapshot still says so
            self._write(partial, self._columns(), [])
        os.replace(partial, final)
        return outcome


def _text(value: str) -> str:
    """A cell no spreadsheet evaluates (the csv module quotes what needs quoting)."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value
