"""Google Data Manager API, as documented (developers.google.com/data-manager/api): members
ingested into and removed from Customer Match lists (`audienceMembers:ingest`, `:remove`,
`:removeAll`), authorized by an OAuth access token for the datamanager scope, no developer
token. A request is refused whole (400 with BadRequest field violations naming the
members) when a member breaks a rule: at most 10,000 members and 10 identifiers each,
SHA-256 values in the declared encoding, consent and the Customer Match terms on
ingests. Accepted requests are applied at once (Google processes them later) and
answered with a requestId; validateOnly applies nothing."""

from __future__ import annotations

import base64
import binascii
import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from winback.emulators.base import Reject, Request
from winback.emulators.google_common import GoogleEmulator

DATAMANAGER_SCOPE = "https://www.googleapis.com/auth/datamanager"
MAX_MEMBERS_PER_REQUEST = 10_000
MAX_IDENTIFIERS_PER_MEMBER = 10
MAX_DESTINATIONS = 10
IDENTIFIER_KINDS = {"emailAddress": "EMAIL", "phoneNumber": "PHONE"}
# The official client sends enums as numbers ($alt=json;enum-encoding=int), others by name.
ENCODINGS = {"HEX": "HEX", 1: "HEX", "BASE64": "BASE64", 2: "BASE64"}
CONSENT_VALUES = {"CONSENT_GRANTED", "CONSENT_DENIED", 1, 2}
GRANTED = {"CONSENT_GRANTED", 1}
TERMS_ACCEPTED = {"ACCEPTED", 1}
GOOGLE_ADS = {"GOOGLE_ADS", 1}


@dataclass
class GoogleDataManagerEmulator(GoogleEmulator):
    scope: str = DATAMANAGER_SCOPE
    # When set, the OAuth user reaches this operating account only through this manager
    # account, which the destination must name as its loginAccount.
    login_account_id: str | None = None
    rejected_hashes: set[str] = field(default_factory=set)  # refused as malformed values
    requests: list[dict[str, Any]] = field(default_factory=list)  # accepted bodies: method, members, validate_only
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def setup(self) -> None:
        super().setup()
        self.route("POST", r"/v1/audienceMembers:(?P<method>ingest|remove|removeAll)", self._members)

    # -- the route ---------------------------------------------------------------------------
    def _members(self, request: Request, match: re.Match) -> dict:
        scope = self.bearer_scope(request, lambda: _error(
            401, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 access "
            "token, login cookie or other valid authentication credential.", reason="ACCESS_TOKEN_EXPIRED",
            domain="googleapis.com"))
        if scope is not None and scope != DATAMANAGER_SCOPE:
            raise _error(403, "PERMISSION_DENIED", "Request had insufficient authentication scopes.",
                         reason="ACCESS_TOKEN_SCOPE_INSUFFICIENT", domain="googleapis.com")
        method, body = match["method"], request.json()
        if not isinstance(body, dict):
            raise _error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        lists = self._destinations(body.get("destinations"))
        if method == "removeAll":
            if not body.get("validateOnly"):
                for list_id in lists:
                    self.clear(list_id)
            return self._accepted(method, 0, body)
        members = body.get("audienceMembers")
        if not isinstance(members, list) or not members:
            raise _violations([("audience_members", "REQUIRED_FIELD_MISSING", "audience_members is required.")])
        if len(members) > MAX_MEMBERS_PER_REQUEST:
            limit = f"Maximum number of audience members allowed per request is {MAX_MEMBERS_PER_REQUEST:,}."
            raise _violations([("audience_members", "TOO_MANY_AUDIENCE_MEMBERS", limit)])
        encoding = ENCODINGS.get(body.get("encoding"))
        if encoding is None:
            raise _violations([("encoding", "INVALID_ARGUMENT", "encoding must be HEX or BASE64 for UserData.")])
        if method == "ingest":
            self._check_ingest(body)
        users, problems = [], []
        for i, member in enumerate(members):
            user, problem = self._user(member, encoding)
            if problem:
                problems.append((f"audience_members.audience_members[{i}]{problem[0]}", *problem[1:]))
            users.append(user)
        if problems:
            raise _violations(problems)
        if not body.get("validateOnly"):
            for list_id in lists:
                self._apply(list_id, method, users, granted=method == "ingest" and self._granted(body))
        return self._accepted(method, len(users), body)

    def _destinations(self, destinations: Any) -> list[str]:
        if not isinstance(destinations, list) or not destinations:
            raise _violations([("destinations", "REQUIRED_FIELD_MISSING", "destinations is required.")])
        if len(destinations) > MAX_DESTINATIONS:
            raise _violations([("destinations", "TOO_MANY_DESTINATIONS",
                                "Maximum number of destinations allowed per request is 10.")])
        lists = []
        for i, dest in enumerate(destinations):
            operating = (dest or {}).get("operatingAccount") or {}
            login = (dest or {}).get("loginAccount") or {}
            if operating.get("accountType") not in GOOGLE_ADS or not re.fullmatch(r"\d+", str(operating.get(
                    "accountId") or "")) or not re.fullmatch(r"\d+", str((dest or {}).get("productDestinationId") or "")):
                raise _violations([(f"destinations[{i}]", "INVALID_DESTINATION", "This Destination is not valid.")])
            if self.login_account_id and (login.get("accountType") not in GOOGLE_ADS
                                          or login.get("accountId") != self.login_account_id):
                raise _error(403, "PERMISSION_DENIED", "The caller does not have permission",
                             reason="PERMISSION_DENIED")
            lists.append(str(dest["productDestinationId"]))
        return lists

    def _check_ingest(self, body: dict) -> None:
        terms = (body.get("termsOfService") or {}).get("customerMatchTermsOfServiceStatus")
        if terms not in TERMS_ACCEPTED:
            raise _violations([("terms_of_service", "TERMS_AND_CONDITIONS_NOT_SIGNED",
                                "Required terms and conditions are not accepted.")])
        consent = body.get("consent") or {}
        for name in ("adUserData", "adPersonalization"):
            if name in consent and consent[name] not in CONSENT_VALUES:
                raise _violations([(f"consent.{name}", "INVALID_ENUM_VALUE", "Enum value cannot be used.")])

    def _user(self, member: Any, encoding: str) -> tuple[tuple, tuple | None]:
        """((kind, value), ...) of one member, and (field suffix, reason, description) if
        Google would refuse it."""
        identifiers = (((member or {}).get("userData") or {}).get("userIdentifiers")
                       if isinstance(member, dict) else None)
        if not isinstance(identifiers, list) or not identifiers:
            return (), ("", "INVALID_AUDIENCE_MEMBER", "This audience member is not valid.")
        if len(identifiers) > MAX_IDENTIFIERS_PER_MEMBER:
            return (), (".user_data.user_identifiers", "TOO_MANY_USER_IDENTIFIERS",
                        "Maximum number of user identifiers allowed per audience member is 10.")
        user = []
        for item in identifiers:
            pairs = list(item.items()) if isinstance(item, dict) else []
            if len(pairs) != 1 or pairs[0][0] not in IDENTIFIER_KINDS:
                return (), (".user_data.user_identifiers", "INVALID_AUDIENCE_MEMBER",
                            "Each UserIdentifier sets exactly one of email_address, phone_number, address.")
            name, value = pairs[0]
            digest = _decoded(value, encoding)
            if digest is None:
                return (), (".user_data.user_identifiers", f"INVALID_{encoding}_ENCODING",
                            f"{IDENTIFIER_KINDS[name].title()} is not {encoding.lower()} encoded.")
            if len(digest) != 32 or value in self.rejected_hashes:
                return (), ("", "INVALID_SHA256_FORMAT", "The SHA256 encoded value is malformed.")
            user.append((IDENTIFIER_KINDS[name], digest.hex()))
        return tuple(user), None

    def _granted(self, body: dict) -> bool:
        consent = body.get("consent") or {}
        return all(consent.get(name, "CONSENT_GRANTED") in GRANTED for name in ("adUserData", "adPersonalization"))

    def _apply(self, list_id: str, method: str, users: list[tuple], granted: bool) -> None:
        for identifiers in users:
            if method == "remove":
                self.remove_user(list_id, identifiers)
            elif granted:  # without consent Google does not use the data
                self.add_user(list_id, identifiers)

    def _accepted(self, method: str, members: int, body: dict) -> dict:
        self.requests.append({"method": method, "members": members, "validate_only": bool(body.get("validateOnly"))})
        return {"requestId": f"emulated-{next(self._ids):06d}"}


def _decoded(value: Any, encoding: str) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        if encoding == "HEX":
            return bytes.fromhex(value) if re.fullmatch(r"[0-9a-fA-F]*", value) else None
        return base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        return None


def _error(status: int, grpc_status: str, message: str, reason: str | None = None,
           domain: str = "datamanager.googleapis.com", violations: list | None = None) -> Reject:
    """Google's error answer (google.rpc.Status with ErrorInfo and BadRequest details)."""
    details: list[dict[str, Any]] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                      "reason": reason or grpc_status, "domain": domain}]
    if violations:
        details.append({"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": violations})
    return Reject(status, {"error": {"code": status, "message": message, "status": grpc_status, "details": details}})


def _violations(problems: list[tuple[str, str, str]]) -> Reject:
    return _error(400, "INVALID_ARGUMENT", "There was a problem with the request.",
                  violations=[{"field": f, "reason": r, "description": d} for f, r, d in problems])
