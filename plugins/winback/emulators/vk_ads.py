"""VK Ads remarketing user lists, as documented (docs/platforms.md): multipart file uploads
of 2,000 - 5,000,000 unique entries (128 MB at most), status `receiving` -> `ready`,
deletion, and the segment relations that point campaigns at a list."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from winback.emulators.base import SHA256_HEX, Emulator, Reject, Request, bearer

MIN_ENTRIES = 2_000
MAX_ENTRIES = 5_000_000
MAX_FILE_BYTES = 128 * 1024 * 1024
LIST_LIMIT = 50  # the largest `limit` a collection read takes here
TYPES = {"emails", "phones"}  # the identifier kinds emulated (VK has more: vk, ok, idfa ...)
PLAIN = {"emails": re.compile(r"[^@\sA-Z]+@[^@\sA-Z]+\.[^@\sA-Z.]+"),  # trimmed, lower-case
         "phones": re.compile(r"[1-9][0-9]{6,14}")}  # 79011234567: digits, country code first


def _invalid(field_name: str, code: str, message: str) -> Reject:
    return Reject(400, {"error": {"code": "validation_error",
                                  "fields": {field_name: [{"code": code, "message": message}]}}})


@dataclass
class VkAdsEmulator(Emulator):
    lists: dict[int, dict[str, Any]] = field(default_factory=dict)  # id -> the list as the API shows it
    entries: dict[int, set[str]] = field(default_factory=dict)  # id -> unique lines of its file
    segments: dict[int, dict[int, dict[str, Any]]] = field(default_factory=dict)  # segment -> relation id -> relation
    ready_after: int = 1  # status reads of a list before it reports `ready`
    stall_uploads: bool = False  # lists uploaded meanwhile stay in processing until finish_processing()
    drop_new_lists: bool = False  # VK deletes the list while processing it (deleted_to_notify)
    match_rate: float = 0.8  # share of entries VK finds users for
    min_entries: int = MIN_ENTRIES
    max_entries: int = MAX_ENTRIES
    max_bytes: int = MAX_FILE_BYTES
    uploads: list[dict[str, Any]] = field(default_factory=list)  # name, type, file name and bytes per upload
    _next_id: int = 1000

    def setup(self) -> None:
        lists = r"/api/v3/remarketing/users_lists"
        relations = r"/api/v2/remarketing/segments/(?P<segment>\d+)/relations"
        self.route("POST", lists + r"\.json", self._upload)
        self.route("GET", lists + r"\.json", self._read_lists)
        self.route("GET", lists + r"/(?P<id>\d+)\.json", self._read_list)
        self.route("DELETE", lists + r"/(?P<id>\d+)\.json", self._delete_list)
        self.route("GET", relations + r"\.json", self._read_relations)
        self.route("POST", relations + r"\.json", self._add_relation)
        self.route("DELETE", relations + r"/(?P<id>\d+)\.json", self._delete_relation)

    def finish_processing(self) -> None:
        """VK is done with the stalled lists: each reports `ready` at its next read."""
        for item in self.lists.values():
            if item.pop("stalled", False):
                item["polls"] = max(item["polls"], self.ready_after - 1)

    # -- what tests look at ----------------------------------------------------------------
    def live(self, name: str | None = None) -> list[dict[str, Any]]:
        return [item for item in self.lists.values()
                if item["status"] != "deleted" and (name is None or item["name"] == name)]

    def held(self, name: str | None = None) -> set[str]:
        """Every entry of the lists not deleted (of this name)."""
        out: set[str] = set()
        for item in self.live(name):
            out |= self.entries[item["id"]]
        return out

    # -- routes ------------------------------------------------------------------------------
    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _upload(self, request: Request, match: re.Match) -> dict:
        bearer(request, self.token)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise _invalid("file", "required", "multipart/form-data with a file is required")
        form = request.form()
        name, kind, content = form.get("name"), form.get("type"), form.get("file")
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise _invalid("name", "invalid", "name is required (at most 255 characters)")
        if kind not in TYPES:
            raise _invalid("type", "invalid_choice", f"type must be one of {', '.join(sorted(TYPES))}")
        if str(form.get("base", "0")) != "0":
            raise _invalid("base", "not_emulated", "updating a base list is not emulated")
        if not isinstance(content, bytes):
            raise _invalid("file", "required", "file is required")
        if len(content) > self.max_bytes:
            raise _invalid("file", "too_large", f"{len(content)} bytes; at most {self.max_bytes}")
        try:
            lines = content.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            raise _invalid("file", "invalid_encoding", "the file must be UTF-8") from None
        unique = {line for line in lines if line}
        for number, line in enumerate(lines, 1):
            if line and not (SHA256_HEX.fullmatch(line) or PLAIN[kind].fullmatch(line)):
                raise _invalid("file", "invalid_entry",
                               f"line {number}: not a normalized {kind[:-1]} nor a lower-case SHA-256 hex")
        if any(SHA256_HEX.fullmatch(v) for v in unique) and not all(SHA256_HEX.fullmatch(v) for v in unique):
            raise _invalid("file", "mixed_entries", "hashed and plain entries in one file")
        if len(unique) < self.min_entries:
            raise _invalid("file", "not_enough_ids", f"{len(unique)} unique entries; at least {self.min_entries}")
        if len(unique) > self.max_entries:
            raise _invalid("file", "too_many_ids", f"{len(unique)} unique entries; at most {self.max_entries}")
        list_id = self._new_id()
        self.entries[list_id] = unique
        self.lists[list_id] = {"id": list_id, "name": name, "type": kind, "status": "receiving", "base": 0,
                               "entries_count": len([line for line in lines if line]), "ids_count": len(unique),
                               "matched_ids_count": 0, "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                               "polls": 0, "stalled": self.stall_uploads}
        self.uploads.append({"id": list_id, "name": name, "type": kind, "content": content})
        return self._shown(self.lists[list_id])

    @staticmethod
    def _shown(item: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in item.items() if k not in ("polls", "stalled")}

    def _list(self, match: re.Match) -> dict[str, Any]:
        item = self.lists.get(int(match["id"]))
        if item is None:
            raise Reject(404, {"error": {"code": "not_found", "message": "no such users list"}})
        return item

    def _read_lists(self, request: Request, match: re.Match) -> dict:
        bearer(request, self.token)
        limit, offset = int(request.query.get("limit", 20)), int(request.query.get("offset", 0))
        if not 1 <= limit <= LIST_LIMIT:
            raise _invalid("limit", "invalid", f"limit must be 1..{LIST_LIMIT}")
        every = sorted(self.lists.values(), key=lambda item: item["id"])
        return {"count": len(every), "offset": offset,
                "items": [self._shown(item) for item in every[offset:offset + limit]]}

    def _read_list(self, request: Request, match: re.Match) -> dict:
        bearer(request, self.token)
        item = self._list(match)
        if item["status"] not in ("ready", "deleted", "deleted_to_notify"):
            item["polls"] += 1
            if self.drop_new_lists:
                item["status"] = "deleted_to_notify"
            elif item["polls"] >= self.ready_after and not item.get("stalled"):
                item["status"] = "ready"
                item["matched_ids_count"] = int(item["ids_count"] * self.match_rate)
            else:
                item["status"] = "mapping"
        return self._shown(item)

    def _delete_list(self, request: Request, match: re.Match) -> dict:
        bearer(request, self.token)
        item = self._list(match)
        if item["status"] == "deleted":
            raise Reject(404, {"error": {"code": "not_found", "message": "the users list is deleted"}})
        item["status"] = "deleted"
        return {}

    def _relations(self, match: re.Match) -> dict[int, dict[str, Any]]:
        relations = self.segments.get(int(match["segment"]))
        if relations is None:
            raise Reject(404, {"error": {"code": "not_found", "message": "no such segment"}})
        return relations

    def _read_relations(self, request: Request, match: re.Match) -> dict:
        bearer(request, self.token)
        relations = list(self._relations(match).values())
        return {"count": len(relations), "offset": 0, "items": relations}

    def _add_relation(self, request: Request, match: re.Match) -> dict:
        bearer(request, self.token)
        relations = self._relations(match)
        body = request.json() or {}
        params = body.get("params") or {}
        source = self.lists.get(params.get("source_id"))
        if body.get("object_type") != "remarketing_users_list" or params.get("type") not in ("positive", "negative"):
            raise _invalid("object_type", "invalid", "expected a remarketing_users_list, type positive or negative")
        if source is None or source["status"] == "deleted":
            raise _invalid("params", "not_found", "params.source_id: no such users list")
        relation = {"id": self._new_id(), "object_type": "remarketing_users_list", "object_id": source["id"],
                    "params": {"source_id": source["id"], "type": params["type"]}}
        relations[relation["id"]] = relation
        return relation

    def _delete_relation(self, request: Request, match: re.Match) -> dict:
        bearer(request, self.token)
        if self._relations(match).pop(int(match["id"]), None) is None:
            raise Reject(404, {"error": {"code": "not_found", "message": "no such relation"}})
        return {}
