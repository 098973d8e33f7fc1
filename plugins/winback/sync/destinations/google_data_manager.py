"""Google Data Manager API: hashed emails and phones added to (`audienceMembers:ingest`)
and removed from (`audienceMembers:remove`) a Google Ads Customer Match list, the way
Google asks new integrations to send Customer Match data since April 2026. OAuth 2.0
(scope datamanager), no developer token, no jobs: a request Google accepts (it answers
a requestId) confirms its members; Google processes them afterwards (diagnostics come
30 minutes to 24 hours later through requestStatus:retrieve)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import Field

from winback.httperror import HttpError
from winback.sync.destinations.base import (
    ApiVersion,
    Destination,
    Member,
    Outcome,
    PlatformId,
    Settings,
    SyncError,
    batches,
)
from winback.sync.destinations.google_common import (
    ACCOUNT_ID,
    OAUTH_SECRET_NAMES,
    GoogleOAuth,
    GoogleOptions,
    account_ids,
    error_of,
)

log = logging.getLogger(__name__)

# developers.google.com/data-manager/api/limits: an IngestAudienceMembersRequest holds at
# most 10,000 AudienceMember resources and 10 user identifiers per member; a project
# may send 300 requests a minute (100,000 a day), beyond that 429 RESOURCE_EXHAUSTED.
MAX_MEMBERS_PER_REQUEST = 10_000
MAX_IDENTIFIERS_PER_MEMBER = 10
REQUESTS_PER_MINUTE = 300
# UserIdentifier (reference/rest/v1/UserData): one of emailAddress, phoneNumber, address;
# values SHA-256 of the formatted identifier, hex-encoded (Encoding HEX).
IDENTIFIER_FIELDS = {"email": "emailAddress", "phone": "phoneNumber"}
# Consent (reference/rest/v1/Consent) spells the status CONSENT_GRANTED / CONSENT_DENIED.
CONSENT = {"GRANTED": "CONSENT_GRANTED", "DENIED": "CONSENT_DENIED"}
# A 400 names the members it refuses in its BadRequest field violations
# ("audience_members.audience_members[3].user_data.user_identifiers"): the whole request
# is refused, so the others are sent again without them.
MEMBER_FIELD = re.compile(r"audience_members\[(\d+)\]")
VIOLATION = re.compile(r'\{[^{}]*"field"[^{}]*\}')  # one BadRequest.FieldViolation object
# Request ids kept for the run's figures (one per 10,000 members).
REQUEST_IDS_KEPT = 100

# The Data Manager API has one version, v1, with no sunset announced
# (developers.google.com/data-manager/api/reference/rest).
API_VERSIONS = (ApiVersion("v1", None, "https://developers.google.com/data-manager/api/reference/rest"),)

assert len(IDENTIFIER_FIELDS) <= MAX_IDENTIFIERS_PER_MEMBER


class GoogleDataManagerOptions(GoogleOptions):
    operating_account_id: str = Field(pattern=ACCOUNT_ID, description="the Google Ads account that owns the lists")
    login_account_id: str | None = Field(default=None, pattern=ACCOUNT_ID, description=(
        "a manager account the access goes through, when the OAuth user reaches the operating account by it"))
    # audienceMembers:ingest: termsOfService.customerMatchTermsOfServiceStatus "must be
    # accepted for all uploads to Customer Match userlists"
    # (support.google.com/adspolicy/answer/6299717). Setting it is the shop's statement.
    customer_match_terms_accepted: Literal[True] = Field(description=(
        "the Customer Match terms of service were accepted for the operating account (Google refuses uploads "
        "without that statement)"))
    validate_only: bool = Field(default=False, description=(
        "Google checks every request and changes nothing; no member counts as synced"))

    _dashes = account_ids("operating_account_id", "login_account_id")


class GoogleDataManagerTarget(Settings):
    user_list_id: PlatformId = Field(pattern=r"^\d+$", description="the Customer Match user list id")


class GoogleDataManager(Destination):
    kind = "google_data_manager"
    channels = frozenset({"ads"})
    identifiers = ("email", "phone")
    hashed = True
    phone_format = "e164"  # "Include the plus sign (+) and the country code" (get-started/formatting)
    # get-started/formatting: lower-case; "Trim leading, trailing and intermediate
    # whitespace"; for gmail.com and googlemail.com remove the dots before "@" (Google's
    # formatter, google-ads-datamanager-util, drops a "+tag" there too).
    email_rules = frozenset({"no_inner_space", "gmail"})
    api_versions = API_VERSIONS
    batch_size = MAX_MEMBERS_PER_REQUEST
    modes = ("mirror", "add_only", "replace")
    pool_slots = 1
    min_interval = 60.0 / REQUESTS_PER_MINUTE  # the project's quota, paced on our side
    default_base_url = "https://datamanager.googleapis.com"  # URLs add the API version
    secret_names = ()
    optional_secret_names = OAUTH_SECRET_NAMES
    Options = GoogleDataManagerOptions
    Target = GoogleDataManagerTarget

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.oauth = GoogleOAuth(self, "Google Data Manager")
        self.request_ids: list[str] = []
        self.requests_accepted = 0

    def url(self, path: str) -> str:
        return f"{self.base_url}/{self.api_version}/{path.lstrip('/')}"

    # -- the protocol --------------------------------------------------------------------
    def add(self, members: Sequence[Member]) -> Outcome:
        return self._members("audienceMembers:ingest", members)

    def remove(self, members: Sequence[Member]) -> Outcome:
        return self._members("audienceMembers:remove", members)

    def replace(self, pages: Iterable[Sequence[Member]]) -> Outcome:
        """removeAll, then every member ingested. Google removes "only audience members
        last added before" the removeAll request (remove_as_of_time, by default when it
        arrives), so the ingests sent after it stay, however Google orders the work."""
        self._post("audienceMembers:removeAll", {"destinations": [self._destination()], **self._validate()})
        outcome = Outcome()
        for page in pages:
            for batch in batches(page, MAX_MEMBERS_PER_REQUEST):
                outcome.merge(self.add(batch))
        return outcome

    def finish(self) -> dict[str, Any]:
        """The accepted requests' ids: Google's diagnostics for them (match rate, per-reason
        error counts) can be read with requestStatus:retrieve after about 30 minutes."""
        figures: dict[str, Any] = {"data_manager_requests": self.requests_accepted}
        if self.request_ids:
            figures["data_manager_request_ids"] = self.request_ids[-REQUEST_IDS_KEPT:]
        if self.options.validate_only:
            figures["validate_only"] = True
        return figures

    # -- requests ------------------------------------------------------------------------
    def _members(self, method: str, members: Sequence[Member]) -> Outcome:
        """One request for these members. Google refuses a request whole when a member is
        malformed, naming it: those members are recorded as rejected and the rest sent
        again (each round takes out at least one)."""
        pending, rejected = list(members), {}
        while pending:
            try:
                answer = self._post(method, self._body(method, pending))
            except HttpError as exc:
                refused = _refused_members(exc, len(pending)) if exc.status == 400 else {}
                if not refused:
                    raise
                rejected.update({pending[i].key: reason for i, reason in refused.items()})
                pending = [m for i, m in enumerate(pending) if i not in refused]
                continue
            self.requests_accepted += 1
            if answer.get("requestId"):
                self.request_ids.append(answer["requestId"])
            # validateOnly: Google checked the request and applied nothing, so nobody is synced.
            accepted = [] if self.options.validate_only else [m.key for m in pending]
            return Outcome(accepted=accepted, rejected=rejected)
        return Outcome(rejected=rejected)

    def _body(self, method: str, members: Sequence[Member]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "destinations": [self._destination()],
            "audienceMembers": [{"userData": {"userIdentifiers": [
                {IDENTIFIER_FIELDS[name]: value} for name, value in m.ids.items() if name in IDENTIFIER_FIELDS]}}
                for m in members],
            "encoding": "HEX",
        }
        if method == "audienceMembers:ingest":  # a removal takes neither
            body["consent"] = {"adUserData": CONSENT[self.options.ad_user_data_consent],
                               "adPersonalization": CONSENT[self.options.ad_personalization_consent]}
            body["termsOfService"] = {"customerMatchTermsOfServiceStatus": "ACCEPTED"}
        return {**body, **self._validate()}

    def _destination(self) -> dict[str, Any]:
        destination: dict[str, Any] = {
            "operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": self.options.operating_account_id},
            "productDestinationId": self.target.user_list_id}
        if self.options.login_account_id:
            destination["loginAccount"] = {"accountType": "GOOGLE_ADS", "accountId": self.options.login_account_id}
        return destination

    def _validate(self) -> dict[str, Any]:
        return {"validateOnly": True} if self.options.validate_only else {}

    def _post(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            reply = self.oauth.request("POST", self.url(method), json=body, pretend={})
        except HttpError as exc:
            raise self._explained(exc) from None
        return reply.json() if reply.text.strip() else {}

    def _explained(self, exc: HttpError) -> Exception:
        """Refusals no retry can cure, told as what to change; others as they came."""
        error = error_of(exc.body)
        reasons = {d.get("reason") for d in error.get("details") or [] if isinstance(d, dict)}
        reasons |= {v.get("reason") for d in error.get("details") or [] if isinstance(d, dict)
                    for v in d.get("fieldViolations") or [] if isinstance(v, dict)}
        if exc.status == 403 and "ACCESS_TOKEN_SCOPE_INSUFFICIENT" in reasons:
            return SyncError(f"{self.name}: the OAuth credentials lack the Data Manager scope: grant "
                             "https://www.googleapis.com/auth/datamanager to the refresh token (one obtained for "
                             "Google Ads has only the adwords scope)")
        if "TERMS_AND_CONDITIONS_NOT_SIGNED" in reasons:
            return SyncError(f"{self.name}: Google says the Customer Match terms of service are not accepted for "
                             f"account {self.options.operating_account_id} "
                             "(support.google.com/adspolicy/answer/6299717)")
        if exc.status == 403:
            return SyncError(f"{self.name}: Google refused access to account {self.options.operating_account_id} "
                             f"or list {self.target.user_list_id} ({error.get('message') or 'PERMISSION_DENIED'}): "
                             "check that the OAuth user can manage them, or set login_account_id to the manager "
                             "account it goes through")
        return exc


def _refused_members(exc: HttpError, count: int) -> dict[int, str]:
    """Index in the request -> reason, for the members a 400 answer names. The client keeps
    only the start of an error answer, so the violations are read one JSON object at a
    time: those cut off are named again by the next answer."""
    refused: dict[int, str] = {}
    for found in VIOLATION.finditer(exc.body or ""):
        try:
            violation = json.loads(found[0])
        except ValueError:
            continue
        index = MEMBER_FIELD.search(str(violation.get("field") or ""))
        if index and int(index[1]) < count:
            reason = f"Google Data Manager {violation.get('reason') or 'INVALID_ARGUMENT'}"
            if violation.get("description"):
                reason += f": {violation['description']}"
            refused.setdefault(int(index[1]), reason)
    return refused
