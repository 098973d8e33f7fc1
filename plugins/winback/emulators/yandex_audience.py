"""Yandex Audience, as documented (docs/platforms.md): `POST /segment/{id}/modify_data` with
a multipart CSV file (UTF-8, the segment's original header, SHA-256 hex values, up to
1 GB, at least 100 rows unless check_size=false); a refused file changes nothing."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from typing import Any

from winback.emulators.base import SHA256_HEX, Emulator, Request
from winback.emulators.yandex_common import oauth, yandex_error

MAX_FILE_BYTES = 1024 ** 3
MIN_SEGMENT_ROWS = 100
MODIFICATIONS = ("addition", "subtraction", "replace")


@dataclass
class Segment:
    columns: tuple[str, ...]  # the header of the file the segment was created from
    name: str = "winback"
    rows: dict[str, tuple[str, ...]] = field(default_factory=dict)  # first value -> row
    index: dict[str, str] = field(default_factory=dict)  # any value -> its row's first value


@dataclass
class YandexAudienceEmulator(Emulator):
    segments: dict[str, Segment] = field(default_factory=dict)
    # An unknown segment id is taken as a segment created from a file with the header of
    # the first file sent to it (handy from the command line); off: 404 like Yandex.
    auto_create: bool = True
    max_file_bytes: int = MAX_FILE_BYTES
    uploads: list[dict[str, Any]] = field(default_factory=list)  # modification, rows, check_size per accepted file

    def setup(self) -> None:
        self.route("POST", r"/v1/management/segment/(?P<segment>\d+)/modify_data", self._modify)

    def create_segment(self, segment_id: str, columns: tuple[str, ...] = ("email", "phone")) -> Segment:
        """A hashed (SHA-256) CRM segment, as if created from a file with this header."""
        self.segments[segment_id] = Segment(tuple(columns))
        return self.segments[segment_id]

    def hashes(self, segment_id: str, column: str = "email") -> set[str]:
        segment = self.segments[segment_id]
        at = segment.columns.index(column)
        return {row[at] for row in segment.rows.values() if row[at]}

    def _modify(self, request: Request, match: re.Match) -> dict:
        oauth(request, self.token)
        modification = request.query.get("modification_type")
        if modification not in MODIFICATIONS:
            raise yandex_error(400, "invalid_parameter", f"modification_type must be one of {', '.join(MODIFICATIONS)}")
        content = request.form().get("file")
        if not isinstance(content, bytes):
            raise yandex_error(400, "missing_parameter", "multipart field 'file' is required")
        segment = self.segments.get(match["segment"])
        if segment is None and self.auto_create:
            header = next(csv.reader(io.StringIO(content.decode("utf-8", "replace"))), [])
            segment = self.create_segment(match["segment"], tuple(header))
        if segment is None:
            raise yandex_error(404, "not_found", f"segment {match['segment']} not found")
        if len(content) > self.max_file_bytes:
            raise yandex_error(400, "invalid_parameter", f"file of {len(content)} bytes; at most {self.max_file_bytes}")
        rows = _rows(content, segment.columns)
        check_size = request.query.get("check_size", "true").lower() != "false"
        if check_size and len(rows) < MIN_SEGMENT_ROWS:
            raise yandex_error(400, "invalid_parameter", f"the file has {len(rows)} records; a segment needs at least "
                                                   f"{MIN_SEGMENT_ROWS} (or check_size=false)")
        if modification == "replace":
            segment.rows.clear()
            segment.index.clear()
        for row in rows:
            if modification == "subtraction":  # a client matches on any of their values
                for first in {segment.index[v] for v in row if v in segment.index}:
                    for value in segment.rows.pop(first, ()):
                        segment.index.pop(value, None)
                continue
            first = next(v for v in row if v)
            segment.rows[first] = row
            segment.index.update({v: first for v in row if v})
        self.uploads.append({"modification": modification, "rows": len(rows), "check_size": check_size})
        return {"segment": {"id": int(match["segment"]), "name": segment.name, "type": "uploading",
                            "status": "is_processed", "hashed": True, "used_hashing_alg": "SHA256",
                            "content_type": "crm"}}


def _rows(content: bytes, columns: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The file's records; any bad line refuses the whole file, naming the line."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise yandex_error(400, "invalid_parameter", "the file is not UTF-8") from None
    lines = list(csv.reader(io.StringIO(text)))
    if not lines or tuple(lines[0]) != columns:
        raise yandex_error(400, "invalid_parameter", f"the header must be the segment's original one: {','.join(columns)}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        if len(line) != len(columns):
            raise yandex_error(400, "invalid_parameter", f"line {number}: {len(line)} fields, expected {len(columns)}")
        if not any(line):
            raise yandex_error(400, "invalid_parameter", f"line {number}: no value")
        if any(v and not SHA256_HEX.fullmatch(v) for v in line):
            raise yandex_error(400, "invalid_parameter", f"line {number}: not a SHA-256 hex value (the segment is hashed)")
        rows.append(tuple(line))
    return rows


