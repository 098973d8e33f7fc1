"""VK Ads (formerly myTarget) remarketing user lists: the audience uploaded as a new
file list of hashed emails or phones, swapped in for the previous list when ready.

Only a list VK reports ready is swapped in and confirms the audience. One that is not
ready in time fails the run and is remembered (its id and the digest of its file,
beside the call lists): the next run swaps it in once ready, without uploading it
again when the audience has not changed since."""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from winback.httperror import HttpError
from winback.private_files import private_dir, write_private
from winback.sync.destinations.base import (
    Destination,
    Member,
    Outcome,
    Settings,
    SyncError,
)

log = logging.getLogger(__name__)

# Limits from docs/platforms.md ("VK Ads remarketing lists"), after ads.vk.com help:
MIN_ENTRIES = 2_000  # a list needs at least 2,000 unique entries
MAX_ENTRIES = 5_000_000  # and at most 5,000,000
MAX_FILE_BYTES = 128 * 1024 * 1024  # "up to 128 MB" (a SHA-256 line is 65 bytes: ~2.06 M hashed entries)
# Not platform limits: members handed to replace() at a time, lists read per page.
PAGE_ROWS = 50_000
LIST_PAGE = 50  # `limit` of collection reads (the maximum VK accepts is unconfirmed)
# ads.vk.com/doc/api/object/RemarketingUsersList: list types ("or their hash sums").
LIST_TYPES = {"email": "emails", "phone": "phones"}
READY = "ready"
GONE = {"pending_delete", "deleting", "deleted", "deleted_to_notify"}  # statuses a list never leaves
LISTS_PATH = "api/v3/remarketing/users_lists"
SEGMENTS_PATH = "api/v2/remarketing/segments"  # relations endpoints: myTarget v2 API, unconfirmed on v3
PENDING_FILE = "vk-pending.json"  # {"list_id", "sha256"}: an uploaded list not yet swapped in


class VkAdsOptions(Settings):
    ready_timeout: float = Field(default=600.0, ge=0, description=(
        "seconds to wait for the new list to reach `ready`; a list not ready by then fails the "
        "run, and the next run swaps it in once ready"))
    poll_interval: float = Field(default=15.0, gt=0, description="seconds between two status reads")


class VkAdsTarget(Settings):
    identifier: Literal["email", "phone"] = Field(
        default="email", description="VK lists hold one identifier kind: the one uploaded for this audience")
    list_name: str | None = Field(default=None, min_length=1, max_length=255, description=(
        "lists of exactly this name are Winback's: older ones are deleted (default 'winback <dest> <audience>')"))
    list_type: str | None = Field(default=None, description="VK list type; default emails / phones")
    segment_id: int | None = Field(default=None, ge=1, description=(
        "the segment campaigns target: moved from the previous list to the new one"))


class VkAds(Destination):
    kind = "vk_ads"
    channels = frozenset({"ads"})
    identifiers = ("email", "phone")
    hashed = True  # VK takes plain or SHA-256 values; hashed is preferred
    phone_format = "digits"  # 79011234567: digits with the country code, no "+"
    batch_size = PAGE_ROWS
    # Each run uploads the whole list. (The object reference also documents `base` = N / -N
    # uploads adding to / removing from list N: a mirror mode once its minimum size is known.)
    modes = ("replace",)
    default_mode = "replace"
    pool_slots = 1  # rate limits per account unconfirmed: one upload at a time
    default_base_url = "https://ads.vk.com"
    Options = VkAdsOptions
    Target = VkAdsTarget

    @property
    def list_name(self) -> str:
        return self.target.list_name or f"winback {self.name} {self.audience}"

    def _call(self, method: str, path: str, pretend: Any = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.secret('token')}"}
        reply = self.http.request(method, self.url(path), headers=headers, pretend=pretend, **kwargs)
        return reply.json() if reply.text.strip() else {}

    def replace(self, pages: Iterable[Sequence[Member]]) -> Outcome:
        identifier = self.target.identifier
        outcome = Outcome()
        # Hashes of what was written, to write each value once (two customers sharing an
        # address): 16-byte digests keep this near 80 bytes per entry, not the values.
        seen: set[bytes] = set()
        duplicates = size = 0
        digest = hashlib.sha256()  # of the whole file: an upload to resume is this one
        folder = private_dir(self.out_dir) if self.out_dir is not None else None
        with tempfile.TemporaryFile(dir=folder, prefix="vk-list-") as spool:  # 0600, unlinked at once
            for page in pages:
                for member in page:
                    value = member.ids.get(identifier)
                    if value is None:
                        outcome.rejected[member.key] = (
                            f"no {identifier}: this VK Ads list takes {identifier}s only (target identifier)")
                        continue
                    outcome.accepted.append(member.key)
                    key = hashlib.blake2b(value.encode(), digest_size=16).digest()
                    if key in seen:
                        duplicates += 1
                        continue
                    seen.add(key)
                    line = f"{value}\n".encode()
                    spool.write(line)
                    digest.update(line)
                    size += len(line)
            entries = len(seen)
            self._check_size(entries, size, without=len(outcome.rejected))
            pending = self._pending()
            resumed = pending is not None and pending["sha256"] == digest.hexdigest()
            if resumed:
                list_id = pending["list_id"]
                log.info("VK Ads list %s for %s holds this audience already: waiting for it, not uploading again",
                         list_id, self.audience)
            else:
                if pending is not None and pending["status"] == READY:
                    # An audience newer than the list in use: in it goes while this one uploads.
                    self._swap(pending["list_id"])
                spool.seek(0)
                # Bytes, not the open file: a retried request must send the whole file again
                # (and the dry run saves it); at most MAX_FILE_BYTES.
                list_id = self._upload(spool.read(), identifier)
        status, matched = self._wait_ready(list_id)
        outcome.figures = {"list_id": list_id, "list_status": status, "entries": entries,
                           "duplicate_entries": duplicates, "matched_ids_count": matched}
        if resumed:
            outcome.figures["resumed_upload"] = True
        log.info("VK Ads list %s for %s: %d entries, status %s", list_id, self.audience, entries, status)
        if status != READY:
            self._remember(list_id, digest.hexdigest())
            raise SyncError(f"VK Ads list {list_id} for audience {self.audience!r} is still {status!r} after "
                            f"{self.options.ready_timeout:.0f}s: nothing is confirmed and the previous list stays "
                            "in use; the next run swaps it in once VK has it ready (uploading it again only if "
                            "the audience changed)")
        outcome.figures["previous_lists_deleted"] = self._swap(list_id)
        self._remember(None)
        return outcome

    def _upload(self, content: bytes, identifier: str) -> int:
        created = self._call("POST", f"{LISTS_PATH}.json",
                             pretend={"id": 0, "status": "receiving", "name": self.list_name},
                             data={"name": self.list_name, "type": self._list_type()},
                             files={"file": (f"{identifier}s.txt", content, "text/plain")})
        return int(created["id"])

    # -- a list uploaded by an earlier run, not swapped in yet --------------------------------
    def _pending_path(self) -> Path | None:
        return Path(self.out_dir) / PENDING_FILE if self.out_dir is not None else None

    def _pending(self) -> dict[str, Any] | None:
        """The list an earlier run uploaded and could not swap in, with its status, if VK
        still has it (the file is on this machine: elsewhere the next run uploads anew)."""
        path = self._pending_path()
        if path is None or not path.exists():
            return None
        try:
            pending = json.loads(path.read_text())
            state = self._call("GET", f"{LISTS_PATH}/{int(pending['list_id'])}.json")
        except (ValueError, KeyError, TypeError, HttpError):  # unreadable, or deleted meanwhile (404)
            return None
        if state.get("status") in GONE or state.get("name") != self.list_name:
            return None
        return {"list_id": int(pending["list_id"]), "sha256": pending.get("sha256"), "status": state.get("status")}

    def _remember(self, list_id: int | None, sha256: str | None = None) -> None:
        path = self._pending_path()
        if path is None:
            return
        if list_id is None:
            path.unlink(missing_ok=True)
        else:
            write_private(path, json.dumps({"list_id": list_id, "sha256": sha256}))

    def _list_type(self) -> str:
        return self.target.list_type or LIST_TYPES[self.target.identifier]

    def _check_size(self, entries: int, size: int, without: int) -> None:
        identifier, problem = self.target.identifier, None
        if entries < MIN_ENTRIES:
            problem = f"has {entries:,} unique {identifier}s; VK Ads needs at least {MIN_ENTRIES:,}"
            if without:
                problem += f" ({without:,} members have no {identifier}: check the target's identifier)"
        elif entries > MAX_ENTRIES:
            problem = f"has {entries:,} unique {identifier}s; VK Ads takes at most {MAX_ENTRIES:,}"
        elif size > MAX_FILE_BYTES:
            problem = f"makes a {size:,}-byte file; VK Ads takes at most {MAX_FILE_BYTES:,} bytes"
        if problem:
            raise SyncError(f"audience {self.audience!r} {problem}: nothing uploaded, "
                            f"the previous VK Ads list stays in use")

    def _wait_ready(self, list_id: int) -> tuple[str, int | None]:
        """Poll the list until `ready` (or gone), at most `ready_timeout` seconds."""
        deadline = time.monotonic() + self.options.ready_timeout
        while True:
            state = self._call("GET", f"{LISTS_PATH}/{list_id}.json",
                               pretend={"id": list_id, "status": READY, "matched_ids_count": 0})
            status = state.get("status", "")
            if status == READY:
                return status, state.get("matched_ids_count")
            if status in GONE:
                raise SyncError(f"VK Ads dropped the new list {list_id} for audience {self.audience!r} "
                                f"(status {status}); the previous list stays in use")
            if time.monotonic() + self.options.poll_interval > deadline:
                return status, None
            time.sleep(self.options.poll_interval)

    def _swap(self, list_id: int) -> int:
        """Point the segment at the new list, then delete Winback's older lists of this
        name (the engine keeps no remote ids, so the name is what ties them together)."""
        older = [item["id"] for item in self._lists()
                 if item.get("name") == self.list_name and item.get("id") != list_id
                 and item.get("status") not in GONE]
        if self.target.segment_id:
            self._repoint_segment(self.target.segment_id, list_id, set(older))
        for old_id in older:
            self._call("DELETE", f"{LISTS_PATH}/{old_id}.json")
        return len(older)

    def _lists(self) -> Iterable[dict]:
        offset = 0
        while True:
            page = self._call("GET", f"{LISTS_PATH}.json", params={"limit": LIST_PAGE, "offset": offset},
                              pretend={"count": 0, "items": []})
            items = page.get("items", []) if isinstance(page, dict) else page
            yield from items
            offset += len(items)
            if len(items) < LIST_PAGE or (isinstance(page, dict) and offset >= page.get("count", 0)):
                return

    def _repoint_segment(self, segment_id: int, list_id: int, older: set[int]) -> None:
        """Relations to the older lists move to the new list with their type (a segment may
        include the audience, "positive", or exclude it, "negative")."""
        path = f"{SEGMENTS_PATH}/{segment_id}/relations"
        relations = self._call("GET", f"{path}.json", pretend={"count": 0, "items": []})
        relations = relations.get("items", []) if isinstance(relations, dict) else relations
        moved = [r for r in relations if r.get("object_type") == "remarketing_users_list"
                 and (r.get("params") or {}).get("source_id") in older]
        for kind in sorted({(r.get("params") or {}).get("type", "positive") for r in moved} or {"positive"}):
            self._call("POST", f"{path}.json", json={"object_type": "remarketing_users_list",
                                                     "params": {"source_id": list_id, "type": kind}})
        for relation in moved:
            self._call("DELETE", f"{path}/{relation['id']}.json")
