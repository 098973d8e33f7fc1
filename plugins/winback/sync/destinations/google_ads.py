"""Google Ads Customer Match: hashed emails and phones added to and removed from a customer
list through OfflineUserDataJobs (create, addOperations, run) over the Google Ads API's
REST interface, authorized with an OAuth 2.0 access token refreshed as it expires. A
job's members are confirmed once Google reports the job SUCCESS; a FAILED job confirms
nobody. Since April 2026 only developer tokens already allow-listed for Customer Match
may upload; others are pointed to the Data Manager destination (google_data_manager)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

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
)

log = logging.getLogger(__name__)

# developers.google.com/google-ads/api/docs/remarketing/audience-segments/customer-match
# (and the TOO_MANY_USER_IDENTIFIERS error text): "Maximum number of user identifiers
# allowed per request is 100,000 and per operation is 20."
MAX_IDENTIFIERS_PER_REQUEST = 100_000
MAX_IDENTIFIERS_PER_USER = 20
# Google recommends about 10,000 per addOperations request for throughput; a member
# carries at most two identifiers here, so 10,000 operations stay far below 100,000.
OPERATIONS_PER_REQUEST = 10_000
# "Prefer one large job to many small ones" (docs/platforms.md): one job (create, several
# addOperations, run) per engine unit; only a job that ran confirms its members.
MEMBERS_PER_JOB = 100_000
# Troubleshooting guide: CONCURRENT_MODIFICATION "can occur if you try to operate on the
# same list at the same time" (e.g. a previous job still running); it is worth waiting.
CONCURRENT_MODIFICATION_RETRIES = 5
CONCURRENT_MODIFICATION_BACKOFF = 5.0  # seconds, doubling, capped at a minute
# OfflineUserDataJobStatus: RUNNING until the upload is processed, then one of these
# (FAILED: "Some operations may have been successfully processed", so none counts).
JOB_DONE = frozenset({"SUCCESS", "FAILED"})
IDENTIFIER_FIELDS = {"email": "hashedEmail", "phone": "hashedPhoneNumber"}
JOB_FIELDS = ("offline_user_data_job.resource_name", "offline_user_data_job.status",
              "offline_user_data_job.failure_reason", "offline_user_data_job.operation_metadata.match_rate_range")

# developers.google.com/ads/blog/posts/2026/03/changes-to-customer-match-support-in: from
# April 2026 a developer token that had not uploaded Customer Match data (Oct 2025 - Mar
# 2026) gets this error from OfflineUserDataJobService; Google points new adopters to the
# Data Manager API. Waiting or retrying cannot help, so the pair fails for good.
NOT_ALLOWLISTED = "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE"

# The versions Winback knows, newest first. Sunsets: Google's sunset reminders give the
# day; for versions still served the release plan below gives the projected month (each
# major version lives a year), written as its first day so the warning comes early,
# never late. google-ads 34, the official Python library, ships v23-v26.
RELEASE_PLAN = "https://developers.google.com/ads/blog/posts/2025/09/more-frequent-releases-coming-for"
SUNSET_REMINDER = "https://developers.google.com/ads/blog/posts/2026/{:02d}/google-ads-api-{}-sunset-reminder"
API_VERSIONS = (
    ApiVersion("v26", date(2027, 11, 1), RELEASE_PLAN),
    ApiVersion("v25", date(2027, 8, 1), RELEASE_PLAN),
    ApiVersion("v24", date(2027, 5, 1), RELEASE_PLAN),
    ApiVersion("v23", date(2027, 2, 1), RELEASE_PLAN),
    ApiVersion("v22", date(2026, 10, 7), SUNSET_REMINDER.format(9, "v22")),
    ApiVersion("v21", date(2026, 8, 5), SUNSET_REMINDER.format(6, "v21")),
    ApiVersion("v20", date(2026, 6, 10), SUNSET_REMINDER.format(4, "v20")),
)

assert len(IDENTIFIER_FIELDS) <= MAX_IDENTIFIERS_PER_USER
assert OPERATIONS_PER_REQUEST * len(IDENTIFIER_FIELDS) <= MAX_IDENTIFIERS_PER_REQUEST


class GoogleAdsOptions(GoogleOptions):
    customer_id: str = Field(pattern=ACCOUNT_ID, description="Google Ads account that owns the customer lists")
    login_customer_id: str | None = Field(
        default=None, pattern=ACCOUNT_ID, description="manager account the access goes through (login-customer-id)")
    fetch_match_rate: bool = Field(default=True, description="report the jobs' status and match rate in the "
                                                             "run's figures")
    # Google's own example polls a running job with backoff: processing takes from
    # minutes to hours. The warehouse is not held meanwhile.
    job_timeout_seconds: float = Field(default=3600.0, ge=0, description=(
        "how long to wait for a job to end SUCCESS or FAILED; a job still running then fails the run, "
        "and its members are sent again next run"))
    poll_initial_seconds: float = Field(default=5.0, gt=0, description="first wait between two status reads")
    poll_max_seconds: float = Field(default=120.0, gt=0, description="the wait doubles up to this")

    _dashes = account_ids("customer_id", "login_customer_id")


class GoogleAdsTarget(Settings):
    user_list_id: PlatformId = Field(pattern=r"^\d+$", description="the Customer Match user list id")


class GoogleAdsCustomerMatch(Destination):
    kind = "google_ads_customer_match"
    channels = frozenset({"ads"})
    identifiers = ("email", "phone")
    hashed = True
    phone_format = "e164"  # Google hashes phones in E.164 with the "+"
    # The Customer Match guide asks for trimmed lower-case addresses (Gmail dots may stay);
    # Google's own example (add_customer_match_user_list.py, normalize_and_hash) also takes
    # out whitespace inside the address, which is never part of a real one.
    email_rules = frozenset({"no_inner_space"})
    api_versions = API_VERSIONS
    batch_size = OPERATIONS_PER_REQUEST
    commit_rows = MEMBERS_PER_JOB
    modes = ("mirror", "add_only", "replace")
    pool_slots = 1  # jobs on the same list at once end in CONCURRENT_MODIFICATION
    default_base_url = "https://googleads.googleapis.com"  # URLs add the API version
    secret_names = ("developer_token",)
    optional_secret_names = OAUTH_SECRET_NAMES
    Options = GoogleAdsOptions
    Target = GoogleAdsTarget

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.jobs: list[str] = []  # resource names of the jobs run, for finish()
        self.ended: dict[str, dict[str, Any]] = {}  # job -> its final status, failure reason, match rate
        self.oauth = GoogleOAuth(self, "Google Ads")

    def url(self, path: str) -> str:
        return f"{self.base_url}/{self.api_version}/{path.lstrip('/')}"

    # -- the job flow --------------------------------------------------------------------
    def add(self, members: Sequence[Member]) -> Outcome:
        return self._job([members], "create")

    def remove(self, members: Sequence[Member]) -> Outcome:
        return self._job([members], "remove")

    def replace(self, pages: Iterable[Sequence[Member]]) -> Outcome:
        """One job: remove_all as its first operation, then every member as a create;
        nothing changes on the list before the job runs."""
        return self._job(pages, "create", remove_all=True)

    def _job(self, pages: Iterable[Sequence[Member]], operation: str, remove_all: bool = False) -> Outcome:
        job = self._create_job()
        outcome = Outcome()
        for page in pages:
            for batch in batches(page, OPERATIONS_PER_REQUEST):
                outcome.merge(self._add_operations(job, batch, operation, remove_all))
                remove_all = False  # only the job's first operation
        if remove_all:  # nobody left: the job only empties the list
            self._add_operations(job, [], operation, remove_all=True)
        self._run(job)
        self._wait_done(job, len(outcome.accepted))
        return outcome

    def _create_job(self) -> str:
        customer = self.options.customer_id
        metadata: dict[str, Any] = {"userList": f"customers/{customer}/userLists/{self.target.user_list_id}",
                                    "consent": {"adUserData": self.options.ad_user_data_consent,
                                                "adPersonalization": self.options.ad_personalization_consent}}
        body = {"job": {"type": "CUSTOMER_MATCH_USER_LIST", "customerMatchUserListMetadata": metadata}}
        answer = self._post(f"customers/{customer}/offlineUserDataJobs:create", body,
                            pretend={"resourceName": f"customers/{customer}/offlineUserDataJobs/0"})
        return answer["resourceName"]

    def _add_operations(self, job: str, batch: Sequence[Member], operation: str, remove_all: bool) -> Outcome:
        lead = [{"removeAll": True}] if remove_all else []
        operations = lead + [{operation: {"userIdentifiers": [{IDENTIFIER_FIELDS[name]: value}
                                                              for name, value in m.ids.items()
                                                              if name in IDENTIFIER_FIELDS]}}
                             for m in batch]
        answer = self._post(f"{job}:addOperations", {"operations": operations, "enablePartialFailure": True},
                            pretend={})
        rejected = _rejections(answer, batch, offset=len(lead))
        return Outcome(accepted=[m.key for m in batch if m.key not in rejected], rejected=rejected)

    def _run(self, job: str) -> None:
        try:
            self._post(f"{job}:run", {}, pretend={"name": job.replace("offlineUserDataJobs", "operations")})
        except HttpError as exc:
            # A run whose answer was lost is resent by the client and refused as no
            # longer PENDING: the job did start, which is all a run has to confirm.
            if exc.status != 400 or self._statuses([job]).get(job, {}).get("status") not in ("RUNNING", "SUCCESS"):
                raise
        self.jobs.append(job)
        log.info("%s: Customer Match job %s started", self.name, job.rsplit("/", 1)[-1])

    def _wait_done(self, job: str, members: int) -> None:
        """Read the job's status, with a doubling wait, until it ends. Only SUCCESS lets
        its members count as synced: FAILED, or still running after job_timeout_seconds,
        raises (the engine records a removal as failed, and an addition fails the run;
        either way the members are sent again next run)."""
        deadline = time.monotonic() + self.options.job_timeout_seconds
        interval, number = self.options.poll_initial_seconds, job.rsplit("/", 1)[-1]
        while True:
            info = self._statuses([job]).get(job) or {}
            if info.get("status") in JOB_DONE:
                break
            if time.monotonic() + interval > deadline:
                raise HttpError(f"{self.name}: Customer Match job {number} is still {info.get('status') or 'unknown'} "
                                f"after {self.options.job_timeout_seconds:.0f}s; its {members} members are not "
                                "confirmed and are sent again next run")
            time.sleep(interval)
            interval = min(interval * 2, self.options.poll_max_seconds)
        self.ended[job] = info
        if info["status"] == "FAILED":
            log.warning("%s: Customer Match job %s failed (%s)", self.name, number, info.get("failure_reason"))
            raise HttpError(f"{self.name}: Customer Match job {number} ended FAILED "
                            f"({info.get('failure_reason') or 'no reason given'}); its {members} members are not "
                            "confirmed and are sent again next run")

    # -- after the run -----------------------------------------------------------------------
    def finish(self) -> dict[str, Any]:
        """The jobs' final status and match rate, as read when each ended (Google keeps
        refining the match for up to 48 h: read it later in the Google Ads UI)."""
        figures: dict[str, Any] = {"google_ads_jobs": len(self.jobs)}
        if not self.ended or not self.options.fetch_match_rate:
            return figures
        figures["google_ads_job_status"] = {k.rsplit("/", 1)[-1]: v.get("status") for k, v in self.ended.items()}
        ranges = [v["match_rate_range"] for v in self.ended.values() if v.get("match_rate_range")]
        if ranges:
            figures["match_rate_range"] = ranges[-1]
        failed = {k.rsplit("/", 1)[-1]: v.get("failure_reason") for k, v in self.ended.items()
                  if v.get("status") == "FAILED"}
        if failed:  # removal jobs: their members are recorded as not removed
            figures["google_ads_failed_jobs"] = failed
        return figures

    def _statuses(self, jobs: list[str]) -> dict[str, dict[str, Any]]:
        ids = ", ".join(job.rsplit("/", 1)[-1] for job in jobs)
        query = f"SELECT {', '.join(JOB_FIELDS)} FROM offline_user_data_job WHERE offline_user_data_job.id IN ({ids})"
        done = [{"offlineUserDataJob": {"resourceName": job, "status": "SUCCESS"}} for job in jobs]
        answer = self._post(f"customers/{self.options.customer_id}/googleAds:search", {"query": query},
                            pretend={"results": done})  # a dry run: as if each job had succeeded
        out = {}
        for row in answer.get("results") or []:
            job = row.get("offlineUserDataJob") or {}
            out[job.get("resourceName", "")] = {
                "status": job.get("status"), "failure_reason": job.get("failureReason"),
                "match_rate_range": (job.get("operationMetadata") or {}).get("matchRateRange")}
        return out

    # -- HTTP ------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"developer-token": self.secret("developer_token")}
        if self.options.login_customer_id:
            headers["login-customer-id"] = self.options.login_customer_id
        return headers

    def _post(self, path: str, body: dict, pretend: Any) -> dict:
        waits = 0
        while True:
            try:
                reply = self.oauth.request("POST", self.url(path), json=body, headers=self._headers(),
                                           pretend=pretend,  # a bad developer token is no token problem
                                           renewable=lambda exc: "DEVELOPER_TOKEN" not in (exc.body or ""))
                answer = reply.json() if reply.text.strip() else {}
            except HttpError as exc:
                if NOT_ALLOWLISTED in (exc.body or ""):
                    raise self._not_allowlisted() from None
                if waits == CONCURRENT_MODIFICATION_RETRIES or "CONCURRENT_MODIFICATION" not in (exc.body or ""):
                    raise
                time.sleep(min(CONCURRENT_MODIFICATION_BACKOFF * 2 ** waits, 60.0))
                waits += 1
                continue
            if NOT_ALLOWLISTED in str(answer.get("partialFailureError") or ""):
                raise self._not_allowlisted()
            return answer

    def _not_allowlisted(self) -> SyncError:
        return SyncError(
            f"{self.name}: Google refuses Customer Match uploads through the Google Ads API for this developer "
            f"token ({NOT_ALLOWLISTED}: since April 2026 only tokens that uploaded Customer Match data between "
            "October 2025 and March 2026 may). Send this audience with the Data Manager API instead: destination "
            "kind google_data_manager, the same user list id, OAuth credentials with the scope "
            "https://www.googleapis.com/auth/datamanager, no developer token")


def _rejections(answer: dict, batch: Sequence[Member], offset: int) -> dict[str, str]:
    """Member key -> reason for the operations a partial-failure answer names (their
    index in the request's `operations`, `offset` of them not members)."""
    failure = answer.get("partialFailureError")
    if not failure:
        return {}
    rejected: dict[str, str] = {}
    for detail in failure.get("details") or []:
        for error in detail.get("errors") or []:
            index = _operation_index(error)
            code = ", ".join(f"{kind}: {name}" for kind, name in (error.get("errorCode") or {}).items())
            reason = f"Google Ads {code}: {error.get('message', '')}".strip()
            if index is not None and index < offset:
                raise HttpError(f"Google Ads refused remove_all: {reason}", 400, str(failure)[:500])
            if index is not None and index - offset < len(batch):
                rejected.setdefault(batch[index - offset].key, reason)
    if not rejected and batch:
        # An error not pinned on an operation: nothing tells the members apart, so the
        # batch counts as refused (retried next run) rather than silently accepted.
        reason = f"Google Ads partial failure: {failure.get('message', '')}".strip()
        return {m.key: reason for m in batch}
    return rejected


def _operation_index(error: dict) -> int | None:
    for element in (error.get("location") or {}).get("fieldPathElements") or []:
        if element.get("fieldName") == "operations" and "index" in element:
            return int(element["index"])
    return None
