"""Yandex Audience: an existing CRM segment changed with CSV files of SHA-256 hashed emails
and phones (`modify_data` with addition, subtraction or replace)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

from pydantic import Field, field_validator

from winback.sync.destinations.base import (
    Destination,
    Member,
    Outcome,
    PlatformId,
    Settings,
)
from winback.sync.identifiers import PhoneFormat

log = logging.getLogger(__name__)

# yandex.com/support/audience/en/file: CRM data files are CSV, "maximum size 1 GB",
# UTF-8, a header line of field names, "minimum number of entries 100".
MAX_FILE_BYTES = 1024 ** 3
MIN_SEGMENT_ROWS = 100  # fewer only with check_size=false, and then unusable in Direct
# A hashed row is at most 64 + 1 + 64 + newline = 130 bytes: 500,000 rows make a 65 MB
# file, well inside 1 GB and cheap to hold in memory while it uploads.
ROWS_PER_FILE = 500_000
MAX_ROWS_PER_FILE = 5_000_000  # 650 MB: the option's ceiling, still under MAX_FILE_BYTES
# yandex.ru/dev/audience/doc/intro/quotas: creating or changing a segment is limited to
# 10 requests a minute, 100 an hour and 500 a day (HTTP 429 past them). Not stated in
# docs/platforms.md ("rate limits unconfirmed"): paced conservatively at 10 a minute.
MIN_SECONDS_BETWEEN_CHANGES = 6.0
# The file format documents phones as "digits with the country code, no spaces or
# symbols" (79995551111); that the same form is what gets hashed is an assumption
# (docs/platforms.md: "unconfirmed: exact form"), hence the option to hash "+7..." instead.
DEFAULT_PHONE_FORMAT: PhoneFormat = "digits"


class YandexAudienceOptions(Settings):
    # "When updating segments, use the file structure that was used when the segment was
    # first loaded": the header of every file is this, whatever identifiers a member has.
    columns: tuple[Literal["email", "phone"], ...] = Field(
        default=("email", "phone"), min_length=1, description="CSV header of the segment as first uploaded")
    rows_per_file: int = Field(default=ROWS_PER_FILE, ge=1, le=MAX_ROWS_PER_FILE,
                               description="rows per uploaded file (one modify_data request each)")
    phone_format: PhoneFormat = Field(
        default=DEFAULT_PHONE_FORMAT,
        description="form of a phone before hashing: digits (79123456789, assumed) or e164 (+79123456789)")

    @field_validator("columns")
    @classmethod
    def _distinct(cls, columns: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(columns)) != len(columns):
            raise ValueError("columns must not repeat")
        return columns


class YandexAudienceTarget(Settings):
    segment_id: PlatformId = Field(pattern=r"^\d+$", description="the CRM segment (created from a hashed SHA-256 file)")


class YandexAudience(Destination):
    kind = "yandex_audience"
    channels = frozenset({"ads"})
    identifiers = ("email", "phone")
    hashed = True
    phone_format = DEFAULT_PHONE_FORMAT  # per destination: options.phone_format
    batch_size = ROWS_PER_FILE
    commit_rows = ROWS_PER_FILE
    modes = ("mirror", "add_only", "replace")
    pool_slots = 1  # the per-user quotas above are shared by every segment of the account
    min_interval = MIN_SECONDS_BETWEEN_CHANGES
    default_base_url = "https://api-audience.yandex.ru/v1/management"
    Options = YandexAudienceOptions
    Target = YandexAudienceTarget

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.phone_format = self.options.phone_format

    def add(self, members: Sequence[Member]) -> Outcome:
        return self._modify(members, "addition")

    def remove(self, members: Sequence[Member]) -> Outcome:
        return self._modify(members, "subtraction")

    def replace(self, pages: Iterable[Sequence[Member]]) -> Outcome:
        """The first file replaces the segment's data, the following ones are added to it.
        No members at all: a file of the header alone empties it (unconfirmed behaviour)."""
        outcome, first, total = Outcome(), True, 0
        for page in pages:
            usable, rejected = self._usable(page)
            outcome.rejected.update(rejected)
            for rows, members in self._files(usable):
                outcome.merge(self._upload("replace" if first else "addition", rows, members))
                first, total = False, total + len(members)
        if first:
            outcome.merge(self._upload("replace", [], []))
        if total < MIN_SEGMENT_ROWS:
            log.warning("%s: segment %s now holds %d rows, fewer than the %d Yandex Direct needs to use it",
                        self.name, self.target.segment_id, total, MIN_SEGMENT_ROWS)
        return outcome

    def _modify(self, members: Sequence[Member], modification: str) -> Outcome:
        usable, rejected = self._usable(members)
        outcome = Outcome(rejected=rejected)
        for rows, chunk in self._files(usable):
            outcome.merge(self._upload(modification, rows, chunk))
        return outcome

    def _usable(self, members: Sequence[Member]) -> tuple[list[Member], dict[str, str]]:
        """Members with a value in one of the segment's columns; the others are refused
        here (Yandex would take the row but could never match it)."""
        columns = self.options.columns
        usable = [m for m in members if any(c in m.ids for c in columns)]
        reason = f"no identifier among the segment's columns ({', '.join(columns)})"
        return usable, {m.key: reason for m in members if not any(c in m.ids for c in columns)}

    def _files(self, members: Sequence[Member]) -> Iterator[tuple[list[str], Sequence[Member]]]:
        """(CSV rows, their members) of at most rows_per_file rows and MAX_FILE_BYTES."""
        columns, limit = self.options.columns, self.options.rows_per_file
        budget = MAX_FILE_BYTES - len(",".join(columns)) - 1
        start, size, rows = 0, 0, []
        for i, m in enumerate(members):
            row = ",".join(m.ids.get(c, "") for c in columns)
            if rows and (len(rows) == limit or size + len(row) + 1 > budget):
                yield rows, members[start:i]
                start, size, rows = i, 0, []
            rows.append(row)
            size += len(row) + 1
        if rows:
            yield rows, members[start:]

    def _upload(self, modification: str, rows: list[str], members: Sequence[Member]) -> Outcome:
        content = "\n".join([",".join(self.options.columns), *rows]).encode("utf-8") + b"\n"
        params = {"modification_type": modification}
        if len(rows) < MIN_SEGMENT_ROWS:
            # Syncs send changes, and a change of a few dozen rows is normal; a small
            # replace is a small audience, synced all the same (and warned about).
            params["check_size"] = "false"
        reply = self.http.request(
            "POST", self.url(f"segment/{self.target.segment_id}/modify_data"), params=params,
            files={"file": ("winback.csv", content, "text/csv")},
            headers={"Authorization": f"OAuth {self.secret('token')}"},
            pretend={"segment": {"id": int(self.target.segment_id), "status": "is_processed"}})
        segment: dict[str, Any] = (reply.json() or {}).get("segment") or {}
        log.info("%s: segment %s %s of %d rows accepted (status %s)", self.name, self.target.segment_id,
                 modification, len(rows), segment.get("status"))
        return Outcome.all_accepted(members, yandex_segment_status=segment.get("status"))
