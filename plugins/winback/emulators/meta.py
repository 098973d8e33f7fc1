"""Meta Custom Audiences, as documented (DESTINATIONS.md): `POST|DELETE /{audience_id}/users`
and `POST /{audience_id}/usersreplace` with `payload={schema, data}` of SHA-256 hex
values, at most 10,000 rows per call, per-call counts of invalid entries with samples."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from winback.emulators.base import SHA256_HEX, Emulator, Reject, Request, bearer

MAX_ROWS = 10_000
KEYS = {"EMAIL", "PHONE", "EMAIL_SHA256", "PHONE_SHA256", "EXTERN_ID"}
PHONE_DIGITS = re.compile(r"[1-9][0-9]{6,14}")  # what Meta hashes: digits, country code, no "+"


@dataclass
class MetaEmulator(Emulator):
    audiences: dict[str, dict[str, tuple]] = field(default_factory=dict)  # id -> {first key: row}
    refuse_removals_below: int = 0  # Meta may refuse removals from a very small audience
    rejected_hashes: set[str] = field(default_factory=set)  # reported back as invalid entries
    max_rows: int = MAX_ROWS
    sessions: dict[str, int] = field(default_factory=dict)  # replace session -> last batch_seq
    received: dict[str, int] = field(default_factory=dict)  # first hashed value -> times it was added
    rows_by_method: dict[str, int] = field(default_factory=dict)  # rows received per HTTP method
    _index: dict[str, dict[str, str]] = field(default_factory=dict)

    def setup(self) -> None:
        self.route("POST", r"/v\d+\.\d+/(?P<audience>\d+)/users", self._add)
        self.route("DELETE", r"/v\d+\.\d+/(?P<audience>\d+)/users", self._remove)
        self.route("POST", r"/v\d+\.\d+/(?P<audience>\d+)/usersreplace", self._replace)

    def members(self, audience_id: str) -> set[tuple]:
        return set(self.audiences.get(audience_id, {}).values())

    def hashes(self, audience_id: str, key: str = "EMAIL") -> set[str]:
        """Every hashed value of one key held by the audience."""
        out = set()
        for row in self.audiences.get(audience_id, {}).values():
            out |= {value for k, value in row if k == key and value}
        return out

    def _rows(self, request: Request) -> tuple[list[str], list[list[str]], dict]:
        bearer(request, self.token)
        body = request.json() or {}
        payload = body.get("payload") or {}
        schema = payload.get("schema")
        schema = [schema] if isinstance(schema, str) else schema
        if not schema or any(k not in KEYS for k in schema):
            raise Reject(400, {"error": {"message": f"invalid schema {schema}", "code": 100}})
        data = payload.get("data")
        if not isinstance(data, list) or not data:
            raise Reject(400, {"error": {"message": "payload.data must be a non-empty list", "code": 100}})
        if len(data) > self.max_rows:
            raise Reject(400, {"error": {"message": f"{len(data)} rows; at most {self.max_rows} per call",
                                         "code": 100}})
        rows = [row if isinstance(row, list) else [row] for row in data]
        self.rows_by_method[request.method] = self.rows_by_method.get(request.method, 0) + len(rows)
        if any(len(row) != len(schema) for row in rows):
            raise Reject(400, {"error": {"message": "a data row does not match the schema", "code": 100}})
        return [k.removesuffix("_SHA256") for k in schema], rows, body.get("session") or {}

    def _valid(self, row: list[str]) -> str | None:
        values = [v for v in row if v]
        if not values:
            return "empty row"
        for value in values:
            if not SHA256_HEX.fullmatch(value):
                return "not a SHA-256 hex digest (unhashed or upper-case value)"
            if value in self.rejected_hashes:
                return "invalid entry"
        return None

    def _apply(self, audience_id: str, schema: list[str], rows: list[list[str]], remove: bool = False) -> dict:
        held = self.audiences.setdefault(audience_id, {})
        index = self._index.setdefault(audience_id, {})  # any hashed value -> its row's first value
        invalid: dict[str, str] = {}
        for row in rows:
            problem = self._valid(row)
            if problem:
                invalid[next((v for v in row if v), "")] = problem
                continue
            if remove:  # a person matches on any of their values
                for first in {index[v] for v in row if v in index}:
                    for _, value in held.pop(first, ()):
                        index.pop(value, None)
                continue
            first = next(v for v in row if v)
            self.received[first] = self.received.get(first, 0) + 1
            for _, value in held.get(first, ()):  # a row with the same first value replaces it whole
                if index.get(value) == first:
                    index.pop(value)
            held[first] = tuple((k, v) for k, v in zip(schema, row))
            index.update({v: first for v in row if v})
        return {"num_received": len(rows), "num_invalid_entries": len(invalid),
                "invalid_entry_samples": dict(list(invalid.items())[:100])}

    def _add(self, request: Request, match: re.Match) -> dict:
        schema, rows, _ = self._rows(request)
        return {"audience_id": match["audience"], "session_id": "1", **self._apply(match["audience"], schema, rows)}

    def _remove(self, request: Request, match: re.Match) -> dict:
        schema, rows, _ = self._rows(request)
        if len(self.audiences.get(match["audience"], {})) < self.refuse_removals_below:
            raise Reject(400, {"error": {"message": "audience too small to remove users", "code": 2650}})
        return {"audience_id": match["audience"], "session_id": "1",
                **self._apply(match["audience"], schema, rows, remove=True)}

    def _replace(self, request: Request, match: re.Match) -> dict:
        schema, rows, session = self._rows(request)
        session_id, seq = str(session.get("session_id", "")), int(session.get("batch_seq", 0))
        if not session_id or seq < 1:
            raise Reject(400, {"error": {"message": "usersreplace needs session.session_id and batch_seq", "code": 100}})
        if seq == 1:
            self.audiences[match["audience"]], self._index[match["audience"]] = {}, {}
        elif self.sessions.get(session_id) not in (seq - 1, seq):  # seq again: a retried batch
            raise Reject(400, {"error": {"message": f"batch_seq {seq} out of order", "code": 100}})
        self.sessions[session_id] = seq
        return {"audience_id": match["audience"], "session_id": session_id,
                **self._apply(match["audience"], schema, rows)}
