"""Meta Custom Audiences, as documented (docs/platforms.md) and as Meta's Business SDK sends
it: `POST|DELETE /{version}/{audience_id}/users` and `POST .../usersreplace` with `payload`
(`{schema, is_raw, data}` of SHA-256 hex values) and `session` (`{session_id, batch_seq,
last_batch_flag, estimated_num_total}`) as JSON-encoded form fields, in the query string
of a DELETE; at most 10,000 rows per call, per-call counts of invalid entries with samples.
It is strict where Graph may be lenient: a JSON body, a missing session or a multi-key
schema without is_raw is refused, so Winback keeps sending the SDK's envelope. An audience
flagged under Meta's restrictions (operation_status 471) refuses every change."""

from __future__ import annotations

import hmac
import json
import re
from dataclasses import dataclass, field
from typing import Any

from winback.emulators.base import SHA256_HEX, Emulator, Reject, Request
from winback.sync.destinations.meta import UPLOAD_BLOCKED_SUBCODE, appsecret_proof

MAX_ROWS = 10_000
KEYS = {"EMAIL", "PHONE", "EMAIL_SHA256", "PHONE_SHA256", "EXTERN_ID"}
PHONE_DIGITS = re.compile(r"[1-9][0-9]{6,14}")  # what Meta hashes: digits, country code, no "+"
# Meta's answer for a flagged audience (developers.facebook.com/docs/marketing-api/reference/custom-audience/users).
UPLOAD_BLOCKED = {"error": {
    "message": "Invalid parameter", "code": 100, "error_subcode": UPLOAD_BLOCKED_SUBCODE,
    "error_user_title": "Audience Upload Blocked",
    "error_user_msg": "Before updating user memberships, you must resolve integrity restrictions on this Data File "
                      "Custom Audience. Go to Audience Manager to appeal the restrictions or create a new audience "
                      "with updated data"}}


def _invalid(message: str) -> Reject:
    return Reject(400, {"error": {"message": message, "code": 100}})


@dataclass
class MetaEmulator(Emulator):
    audiences: dict[str, dict[str, tuple]] = field(default_factory=dict)  # id -> {first key: row}
    refuse_removals_below: int = 0  # Meta may refuse removals from a very small audience
    rejected_hashes: set[str] = field(default_factory=set)  # reported back as invalid entries
    blocked: set[str] = field(default_factory=set)  # audiences flagged with operation_status 471
    app_secret: str | None = None  # "Require App Secret": every call carries appsecret_proof
    max_rows: int = MAX_ROWS
    sessions: dict[int, int] = field(default_factory=dict)  # session_id -> last batch_seq
    received: dict[str, int] = field(default_factory=dict)  # first hashed value -> times it was added
    rows_by_method: dict[str, int] = field(default_factory=dict)  # rows received per HTTP method
    calls_by_version: dict[str, int] = field(default_factory=dict)  # "v26.0" -> calls
    _index: dict[str, dict[str, str]] = field(default_factory=dict)

    def setup(self) -> None:
        base = r"/(?P<version>v\d+\.\d+)/(?P<audience>\d+)"
        self.route("POST", base + "/users", self._add)
        self.route("DELETE", base + "/users", self._remove)
        self.route("POST", base + "/usersreplace", self._replace)

    def members(self, audience_id: str) -> set[tuple]:
        return set(self.audiences.get(audience_id, {}).values())

    def hashes(self, audience_id: str, key: str = "EMAIL") -> set[str]:
        """Every hashed value of one key held by the audience."""
        out = set()
        for row in self.audiences.get(audience_id, {}).values():
            out |= {value for k, value in row if k == key and value}
        return out

    def _params(self, request: Request) -> dict[str, str]:
        """The call's parameters where the SDK puts them: a DELETE's in the query string, a
        POST's in its urlencoded (or multipart) form; the access token as a Bearer header
        or the access_token parameter (the SDK's way)."""
        if request.method == "DELETE":
            if request.body:
                raise _invalid("(#100) a DELETE carries its parameters in the query string, not a body")
            params = dict(request.query)
        else:
            kind = request.headers.get("content-type", "")
            if not kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
                raise _invalid("(#100) The parameter payload is required (a form field, not a JSON body)")
            params = {**request.query, **request.form()}
        token = params.get("access_token") or request.headers.get("authorization", "").removeprefix("Bearer ")
        if not token or not hmac.compare_digest(token, self.token):
            raise Reject(401, {"error": {"message": "Invalid OAuth access token.", "code": 190}})
        if self.app_secret and not hmac.compare_digest(params.get("appsecret_proof", ""),
                                                       appsecret_proof(self.app_secret, self.token)):
            raise _invalid("(#100) Invalid appsecret_proof provided in the API argument")
        return params

    def _rows(self, request: Request, match: re.Match) -> tuple[list[str], list[list[str]], dict]:
        params = self._params(request)
        self.calls_by_version[match["version"]] = self.calls_by_version.get(match["version"], 0) + 1
        if match["audience"] in self.blocked:
            raise Reject(400, UPLOAD_BLOCKED)
        payload, session = _decoded(params, "payload"), _decoded(params, "session")
        schema = payload.get("schema")
        if isinstance(schema, list) and payload.get("is_raw") is not True:
            raise _invalid("(#100) a multi-key schema needs is_raw: true")
        schema = [schema] if isinstance(schema, str) else schema
        if not schema or any(k not in KEYS for k in schema):
            raise _invalid(f"invalid schema {schema}")
        data = payload.get("data")
        if not isinstance(data, list) or not data:
            raise _invalid("payload.data must be a non-empty list")
        if len(data) > self.max_rows:
            raise _invalid(f"{len(data)} rows; at most {self.max_rows} per call")
        rows = [row if isinstance(row, list) else [row] for row in data]
        self.rows_by_method[request.method] = self.rows_by_method.get(request.method, 0) + len(rows)
        if any(len(row) != len(schema) for row in rows):
            raise _invalid("a data row does not match the schema")
        self._session(session, request.method, match["audience"])
        return [k.removesuffix("_SHA256") for k in schema], rows, session

    def _session(self, session: dict, method: str, audience: str) -> None:
        """The guide requires a session on every call: its id, batches numbered from 1 in
        order (a batch again: a retried call)."""
        session_id, seq, last = session.get("session_id"), session.get("batch_seq"), session.get("last_batch_flag")
        if not isinstance(session_id, int) or session_id < 1 or not isinstance(seq, int) or seq < 1 \
                or not isinstance(last, bool):
            raise _invalid("(#100) session needs session_id, batch_seq (from 1) and last_batch_flag")
        if seq > 1 and self.sessions.get(session_id) not in (seq - 1, seq):
            raise _invalid(f"batch_seq {seq} out of order")
        self.sessions[session_id] = seq

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
        schema, rows, session = self._rows(request, match)
        return {"audience_id": match["audience"], "session_id": str(session["session_id"]),
                **self._apply(match["audience"], schema, rows)}

    def _remove(self, request: Request, match: re.Match) -> dict:
        schema, rows, session = self._rows(request, match)
        if len(self.audiences.get(match["audience"], {})) < self.refuse_removals_below:
            raise Reject(400, {"error": {"message": "audience too small to remove users", "code": 2650}})
        return {"audience_id": match["audience"], "session_id": str(session["session_id"]),
                **self._apply(match["audience"], schema, rows, remove=True)}

    def _replace(self, request: Request, match: re.Match) -> dict:
        schema, rows, session = self._rows(request, match)
        if session["batch_seq"] == 1:
            self.audiences[match["audience"]], self._index[match["audience"]] = {}, {}
        return {"audience_id": match["audience"], "session_id": str(session["session_id"]),
                **self._apply(match["audience"], schema, rows)}


def _decoded(params: dict[str, str], name: str) -> dict[str, Any]:
    """A JSON-encoded object parameter (the SDK's encoding of payload and session)."""
    if name not in params:
        raise _invalid(f"(#100) The parameter {name} is required")
    try:
        value = json.loads(params[name])
    except ValueError:
        raise _invalid(f"(#100) {name} is not JSON") from None
    if not isinstance(value, dict):
        raise _invalid(f"(#100) {name} must be a JSON object")
    return value
