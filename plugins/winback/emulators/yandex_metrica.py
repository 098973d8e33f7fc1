"""Yandex Metrica's Logs API, enforcing its flow
(https://yandex.ru/dev/metrika/en/logs/practice/quick-start and the openapi pages beside it):

- every call needs `Authorization: OAuth <token>` (401 without, 403 with another token);
- GET .../logrequests/evaluate says whether the period can be prepared at once, and how
  many days can (`max_possible_days` here);
- POST .../logrequests creates a request in status `created`: date1 <= date2 < today,
  at most a year, known fields of the source only (400 otherwise, as Metrica answers);
- GET .../logrequest/{id} turns it `processed` only at the `polls_to_process`-th look,
  with its parts (`part_rows` records each);
- GET .../logrequest/{id}/part/{n}/download before that is a 400; after, a TSV whose
  header is the requested fields, arrays written as ClickHouse does (['a','b']);
- POST .../logrequest/{id}/clean (processed only) and .../cancel (not yet processed).

`throttle` answers a named step ("evaluate", "create", "status", "download", "clean")
with 429 that many times first. Records are dicts of field -> value (lists for arrays; a
string for an array field is written as it is, e.g. a broken array).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from winback.emulators.base import Emulator, Reject, Request
from winback.emulators.yandex_common import oauth, yandex_error

# The fields this stand-in knows (a subset of Metrica's), per source.
HIT_FIELDS = frozenset({
    "ym:pv:watchID", "ym:pv:pageViewID", "ym:pv:visitID", "ym:pv:counterID", "ym:pv:clientID",
    "ym:pv:counterUserIDHash", "ym:pv:date", "ym:pv:dateTime", "ym:pv:title", "ym:pv:URL", "ym:pv:referer",
    "ym:pv:UTMCampaign", "ym:pv:UTMContent", "ym:pv:UTMMedium", "ym:pv:UTMSource", "ym:pv:UTMTerm",
    "ym:pv:isPageView", "ym:pv:goalsID", "ym:pv:params", "ym:pv:parsedParamsKey1", "ym:pv:parsedParamsKey2",
    "ym:pv:purchaseID", "ym:pv:purchaseRevenue", "ym:pv:purchaseCurrency", "ym:pv:productID",
    "ym:pv:productName", "ym:pv:productCategory", "ym:pv:productPrice", "ym:pv:productQuantity",
    "ym:pv:productEventType", "ym:pv:productCurrency", "ym:pv:ecommerce",
})
VISIT_FIELDS = frozenset({
    "ym:s:visitID", "ym:s:counterID", "ym:s:watchIDs", "ym:s:date", "ym:s:dateTime", "ym:s:clientID",
    "ym:s:startURL", "ym:s:pageViews", "ym:s:automaticUTMSource", "ym:s:automaticUTMMedium",
    "ym:s:automaticUTMCampaign", "ym:s:parsedParamsKey1", "ym:s:parsedParamsKey2", "ym:s:purchaseID",
    "ym:s:purchaseRevenue", "ym:s:productID", "ym:s:productName", "ym:s:productCategory", "ym:s:productPrice",
    "ym:s:productQuantity", "ym:s:productEventType", "ym:s:productEventTime",
})
FIELDS = {"hits": HIT_FIELDS, "visits": VISIT_FIELDS}
TIME_FIELD = {"hits": "ym:pv:dateTime", "visits": "ym:s:dateTime"}
MAX_DAYS = 366  # "no more than 1 year per request"


@dataclass
class LogRequest:
    request_id: int
    source: str
    date1: date
    date2: date
    fields: list[str]
    status: str = "created"
    polls: int = 0
    parts: list[bytes] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        body = {"request_id": self.request_id, "source": self.source, "date1": self.date1.isoformat(),
                "date2": self.date2.isoformat(), "fields": self.fields, "status": self.status,
                "size": sum(len(p) for p in self.parts)}
        if self.status == "processed":
            body["parts"] = [{"part_number": n, "size": len(p)} for n, p in enumerate(self.parts)]
        return body


def tsv_value(value: Any) -> str:
    """A value as Metrica's TSV writes it (ClickHouse TabSeparated): arrays as
    ['a','b'] or [1,2], strings with \\t, \\n and \\\\ escaped."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        items = []
        for item in value:
            if isinstance(item, str):
                escaped = item.replace("\\", "\\\\").replace("'", "\\'")
                items.append(f"'{escaped}'")
            else:
                items.append(str(item))
        return "[" + ",".join(items) + "]"
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


@dataclass
class YandexMetricaEmulator(Emulator):
    counter_id: int = 44147844
    hits: list[dict[str, Any]] = field(default_factory=list)
    visits: list[dict[str, Any]] = field(default_factory=list)
    polls_to_process: int = 2  # the status look at which a request becomes processed
    part_rows: int = 1000  # records per part
    max_possible_days: int = MAX_DAYS  # evaluate: more days than this are "not possible"
    today: date = field(default_factory=date.today)
    throttle: dict[str, int] = field(default_factory=dict)  # step -> 429s to answer first

    def setup(self) -> None:
        self.requests: dict[int, LogRequest] = {}
        self.next_id = 1000
        base = r"/management/v1/counter/(?P<counter>\d+)"
        self.route("GET", base + r"/logrequests/evaluate", self._evaluate)
        self.route("POST", base + r"/logrequests", self._create)
        self.route("GET", base + r"/logrequest/(?P<id>\d+)", self._status)
        self.route("GET", base + r"/logrequest/(?P<id>\d+)/part/(?P<part>\d+)/download", self._download)
        self.route("POST", base + r"/logrequest/(?P<id>\d+)/clean", self._clean)
        self.route("POST", base + r"/logrequest/(?P<id>\d+)/cancel", self._cancel)

    # -- what tests look at -----------------------------------------------------------
    def steps(self) -> list[tuple[str, int]]:
        """(step, status) of every call, in order."""
        return [(self._step(r["method"], r["path"]), r["status"]) for r in self.log]

    @staticmethod
    def _step(method: str, path: str) -> str:
        if path.endswith("/evaluate"):
            return "evaluate"
        if path.endswith("/logrequests"):
            return "create"
        if path.endswith("/download"):
            return "download"
        if path.endswith("/clean"):
            return "clean"
        if path.endswith("/cancel"):
            return "cancel"
        return "status"

    # -- routes -----------------------------------------------------------------------
    def _checked(self, request: Request, match: re.Match, step: str) -> None:
        oauth(request, self.token)
        if int(match["counter"]) != self.counter_id:
            raise yandex_error(403, "access_denied", f"no access to counter {match['counter']}")
        if self.throttle.get(step, 0) > 0:
            self.throttle[step] -= 1
            raise Reject(429, {"errors": [{"error_type": "quota_requests_by_ip", "message": "Too many requests"}],
                               "code": 429, "message": "Too many requests"}, {"Retry-After": "1"})

    def _period(self, request: Request) -> tuple[str, date, date, list[str]]:
        query = request.query
        source = query.get("source", "")
        if source not in FIELDS:
            raise yandex_error(400, "invalid_parameter", "source must be hits or visits")
        try:
            date1, date2 = date.fromisoformat(query.get("date1", "")), date.fromisoformat(query.get("date2", ""))
        except ValueError:
            raise yandex_error(400, "invalid_parameter", "date1 and date2 are required, as YYYY-MM-DD") from None
        if date1 > date2:
            raise yandex_error(400, "invalid_parameter", "date1 is after date2")
        if date2 >= self.today:
            raise yandex_error(400, "invalid_parameter", "date2 can't be the current day or later")
        if (date2 - date1).days + 1 > MAX_DAYS:
            raise yandex_error(400, "invalid_parameter", "a log request covers at most one year")
        fields = [f for f in query.get("fields", "").split(",") if f]
        unknown = [f for f in fields if f not in FIELDS[source]]
        if not fields or unknown:
            raise yandex_error(400, "invalid_parameter", f"unknown fields: {', '.join(unknown) or '(none given)'}")
        return source, date1, date2, fields

    def _evaluate(self, request: Request, match: re.Match) -> dict:
        self._checked(request, match, "evaluate")
        _, date1, date2, _ = self._period(request)
        days = (date2 - date1).days + 1
        return {"log_request_evaluation": {"possible": days <= self.max_possible_days,
                                           "max_possible_day_quantity": self.max_possible_days}}

    def _create(self, request: Request, match: re.Match) -> dict:
        self._checked(request, match, "create")
        source, date1, date2, fields = self._period(request)
        self.next_id += 1
        log_request = LogRequest(self.next_id, source, date1, date2, fields)
        self.requests[log_request.request_id] = log_request
        return {"log_request": log_request.json()}

    def _request(self, match: re.Match) -> LogRequest:
        found = self.requests.get(int(match["id"]))
        if found is None:
            raise yandex_error(404, "not_found", f"log request {match['id']} not found")
        return found

    def _status(self, request: Request, match: re.Match) -> dict:
        self._checked(request, match, "status")
        log_request = self._request(match)
        if log_request.status == "created":
            log_request.polls += 1
            if log_request.polls >= self.polls_to_process:
                log_request.parts = self._prepare(log_request)
                log_request.status = "processed"
        return {"log_request": log_request.json()}

    def _download(self, request: Request, match: re.Match) -> bytes:
        self._checked(request, match, "download")
        log_request = self._request(match)
        if log_request.status != "processed":
            raise yandex_error(400, "invalid_parameter", f"log request {log_request.request_id} is {log_request.status}, "
                                                   f"not processed")
        part = int(match["part"])
        if part >= len(log_request.parts):
            raise yandex_error(404, "not_found", f"part {part} not found")
        return log_request.parts[part]

    def _clean(self, request: Request, match: re.Match) -> dict:
        self._checked(request, match, "clean")
        log_request = self._request(match)
        if log_request.status != "processed":
            raise yandex_error(400, "invalid_parameter", f"only a processed request can be cleaned; it is "
                                                   f"{log_request.status}")
        log_request.status, log_request.parts = "cleaned_by_user", []
        return {"log_request": log_request.json()}

    def _cancel(self, request: Request, match: re.Match) -> dict:
        self._checked(request, match, "cancel")
        log_request = self._request(match)
        if log_request.status != "created":
            raise yandex_error(400, "invalid_parameter", f"only a request not yet processed can be cancelled; it is "
                                                   f"{log_request.status}")
        log_request.status = "canceled"
        return {"log_request": log_request.json()}

    # -- preparing ----------------------------------------------------------------------
    def _prepare(self, log_request: LogRequest) -> list[bytes]:
        """The period's records as TSV parts of part_rows records, each with the header."""
        records = self.hits if log_request.source == "hits" else self.visits
        moment = TIME_FIELD[log_request.source]
        chosen = [r for r in records
                  if log_request.date1 <= datetime.fromisoformat(r[moment]).date() <= log_request.date2]
        header = "\t".join(log_request.fields)
        parts = []
        for at in range(0, max(len(chosen), 1), self.part_rows):
            lines = [header] + ["\t".join(tsv_value(r.get(f)) for f in log_request.fields)
                                for r in chosen[at:at + self.part_rows]]
            parts.append(("\n".join(lines) + "\n").encode("utf-8"))
        return parts
