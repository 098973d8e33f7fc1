"""What a dry run leaves on disk: the requests as they would be sent, with no form of
a secret in them (as it is, escaped in JSON text, URL-encoded, base64), in files and
folders only their owner can read (they hold the members' addresses)."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from urllib.parse import quote, quote_plus

from destinations.contract import sync_once
from destinations.test_unisender import UNISENDER
from destinations.test_yandex_audience import YANDEX
from sync_support import person
from winback.emulators.unisender import UniSenderEmulator
from winback.emulators.yandex_audience import YandexAudienceEmulator
from winback.private_files import file_mode, folder_mode
from winback.sync.transport import DryRunTransport

# A quote and a backslash (JSON escapes them), a slash, non-ASCII (escaped or not), and
# &, =, +, % (URL-encoded).
SECRET = 'to"k\\en/ü&=+%x'


def forms(secret: str) -> set[str]:
    """Every spelling of the secret a request file could carry."""
    return {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1], quote(secret),
            quote(secret, safe=""), quote_plus(secret), base64.b64encode(secret.encode()).decode(),
            base64.b64encode(f"user:{secret}".encode()).decode()}


def everything_written(folder: Path) -> str:
    return "".join(p.read_bytes().decode("utf-8", "replace") for p in sorted(folder.iterdir()))


def test_no_form_of_a_secret_reaches_the_request_files(tmp_path):
    """Before the fix the secret was replaced in the serialised line, where JSON had
    already escaped its quote and backslash: `to\\"k\\\\en...` went through untouched."""
    folder = tmp_path / "dry"
    transport = DryRunTransport(folder, [SECRET])
    transport.request(
        "POST", f"https://api.example/v1/lists?token={quote(SECRET, safe='')}&also={quote_plus(SECRET)}",
        headers={"X-Custom-Token": SECRET, "Accept": "application/json"}, params={"token": SECRET, "page": "1"},
        json={"api_key": SECRET, "nested": [{"text": f"before {SECRET} after"}], "embedded": json.dumps({"k": SECRET})},
        auth=("user", SECRET))
    transport.request("POST", "https://api.example/form", data=[("format", "json"), ("api_key", SECRET)])
    transport.request("POST", "https://api.example/raw", data=json.dumps({"key": SECRET}).encode())
    transport.request("POST", "https://api.example/upload",
                      files={"file": ("list.csv", f"email\n{SECRET}\n".encode(), "text/csv")})
    transport.close()

    text = everything_written(folder)
    assert not {form for form in forms(SECRET) if form in text}
    query, form, raw, upload = [json.loads(line) for line in (folder / "requests.jsonl").read_text().splitlines()]
    assert query["url"] == "https://api.example/v1/lists?token=***&also=***"
    assert query["headers"] == {"X-Custom-Token": "***", "Accept": "application/json", "Authorization": "***"}
    assert query["params"] == {"token": "***", "page": "1"}
    assert query["json"] == {"api_key": "***", "nested": [{"text": "before *** after"}], "embedded": '{"k": "***"}'}
    assert form["data"] == [["format", "json"], ["api_key", "***"]] and raw["data"] == {"key": "***"}
    assert (folder / upload["files"]["file"]).read_text() == "email\n***\n"


def test_a_dry_run_with_a_token_of_awkward_characters_writes_none_of_it(tmp_path, monkeypatch):
    """UniSender takes its key in the form body: the request file shows the body with
    the key scrubbed, whatever characters the key has."""
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", SECRET)
    platform = type(UNISENDER)(**{**UNISENDER.__dict__, "secrets": {"token": SECRET}})
    with UniSenderEmulator(token=SECRET) as emu:
        summary, _ = sync_once(tmp_path, platform, emu.base_url, [person(i) for i in range(3)], dry_run=True)
    assert summary["status"] == "succeeded" and emu.log == []
    folder = Path(summary["requests_dir"])
    assert not {form for form in forms(SECRET) if form in everything_written(folder)}
    [record] = [json.loads(line) for line in (folder / "requests.jsonl").read_text().splitlines()]
    assert ["api_key", "***"] in record["data"]


def test_dry_run_files_are_readable_by_their_owner_only(tmp_path, monkeypatch):
    """requests.jsonl, the uploaded files saved beside it and summary.json hold
    addresses (or their hashes): 0600 in 0700 folders. Before the fix: 0644 in 0755."""
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "test-token")
    with YandexAudienceEmulator() as emu:
        summary, _ = sync_once(tmp_path, YANDEX, emu.base_url, [person(i) for i in range(3)], dry_run=True)
    folder = Path(summary["requests_dir"])
    written = sorted(p.name for p in folder.iterdir())
    assert "requests.jsonl" in written and "summary.json" in written and any(n.endswith("winback.csv") for n in written)
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {file_mode()} == {0o600}
    for where in (folder, folder.parent, folder.parent.parent):  # dry-run/<pair>, dry-run, the sync's out_dir
        assert stat.S_IMODE(where.stat().st_mode) == folder_mode() == 0o700
