"""Google Ads Customer Match, as documented (docs/platforms.md): OfflineUserDataJobs created
with consent, filled with create/remove operations of SHA-256 identifiers (at most
100,000 identifiers per request, 20 per user, partial failures per operation) and
applied to the user list only when run, once, and processed (RUNNING for `job_polls`
status reads, then SUCCESS, or FAILED with nothing applied for the next `fail_jobs`).
Any version in the path is served (`versions` records which were called); a developer
token not allow-listed for Customer Match (since April 2026) is refused at the call named
by `refuse_upload_at`. Its `POST /token` is Google's OAuth 2.0 token endpoint."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from winback.emulators.base import SHA256_HEX, Reject, Request
from winback.emulators.google_common import GoogleEmulator

MAX_IDENTIFIERS_PER_REQUEST = 100_000
MAX_IDENTIFIERS_PER_USER = 20
IDENTIFIER_KINDS = {"hashedEmail": "EMAIL", "hashedPhoneNumber": "PHONE"}
CONSENT_VALUES = {"GRANTED", "DENIED"}
FAILURE_TYPE = "type.googleapis.com/google.ads.googleads.{}.errors.GoogleAdsFailure"
NEWEST = "v26"  # the version named in errors raised where the request's is not at hand
ADWORDS_SCOPE = "https://www.googleapis.com/auth/adwords"


@dataclass
class Job:
    customer_id: str
    user_list_id: str
    consent_granted: bool
    status: str = "PENDING"
    operation: str | None = None  # "create" or "remove": a job cannot mix them
    remove_all: bool = False
    users: list[tuple[tuple[str, str], ...]] = field(default_factory=list)  # ((kind, hash), ...) per operation
    polls_left: int = 0  # status reads while RUNNING before it ends
    fails: bool = False  # it ends FAILED


@dataclass
class GoogleAdsEmulator(GoogleEmulator):
    developer_token: str = "dev-token"
    scope: str = ADWORDS_SCOPE
    login_customer_id: str | None = None  # when set, the header must carry it
    jobs: dict[str, Job] = field(default_factory=dict)
    rejected_hashes: set[str] = field(default_factory=set)  # refused per operation as invalid values
    match_rate_range: str = "MATCH_RANGE_51_TO_60"
    concurrent_modifications: int = 0  # the next N runs answer CONCURRENT_MODIFICATION
    job_polls: int = 0  # status reads a run job stays RUNNING (0: done as soon as it runs)
    fail_jobs: int = 0  # the next N jobs run end FAILED, applying nothing
    operations_per_request: list[int] = field(default_factory=list)
    # "create" or "addOperations": that call answers CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE
    # (NotAllowlistedError is among CreateOfflineUserDataJob's documented errors; Google
    # names no HTTP status, so the destination goes by the code wherever it comes).
    refuse_upload_at: str | None = None
    versions: set[str] = field(default_factory=set)  # API versions called
    _ids: Any = field(default_factory=lambda: itertools.count(1001))

    def setup(self) -> None:
        super().setup()
        base = r"/(?P<version>v\d+)/customers/(?P<customer>\d+)"
        self.route("POST", base + r"/offlineUserDataJobs:create", self._create)
        self.route("POST", base + r"/offlineUserDataJobs/(?P<job>\d+):addOperations", self._add_operations)
        self.route("POST", base + r"/offlineUserDataJobs/(?P<job>\d+):run", self._run)
        self.route("POST", base + r"/googleAds:search", self._search)

    # -- routes ----------------------------------------------------------------------------
    def _auth(self, request: Request, match: re.Match) -> None:
        version = match["version"]
        self.versions.add(version)
        scope = self.bearer_scope(request, lambda: _failure(
            401, "UNAUTHENTICATED", {"authenticationError": "OAUTH_TOKEN_EXPIRED"},
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
            "other valid authentication credential.", version))
        if scope is not None and scope != ADWORDS_SCOPE:
            raise _failure(403, "PERMISSION_DENIED", {"authorizationError": "OAUTH_TOKEN_SCOPE_INSUFFICIENT"},
                           "Request had insufficient authentication scopes.", version)
        if request.headers.get("developer-token") != self.developer_token:
            raise _failure(401, "UNAUTHENTICATED", {"authenticationError": "DEVELOPER_TOKEN_INVALID"},
                           "The developer token is not valid.", version)
        if self.login_customer_id and request.headers.get("login-customer-id") != self.login_customer_id:
            raise _failure(403, "PERMISSION_DENIED", {"authorizationError": "USER_PERMISSION_DENIED"},
                           "User doesn't have permission to access customer (check login-customer-id).", version)
        method = request.path.rsplit(":", 1)[-1]
        if self.refuse_upload_at == method:
            raise _failure(403, "PERMISSION_DENIED", {"notAllowlistedError": "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE"},
                           "Customer is not allowlisted for accessing this feature.", version)

    def _create(self, request: Request, match: re.Match) -> dict:
        self._auth(request, match)
        job = (request.json() or {}).get("job") or {}
        if job.get("type") != "CUSTOMER_MATCH_USER_LIST":
            raise _failure(400, "INVALID_ARGUMENT", {"offlineUserDataJobError": "INVALID_USER_LIST_TYPE"},
                           "job.type must be CUSTOMER_MATCH_USER_LIST.")
        metadata = job.get("customerMatchUserListMetadata") or {}
        found = re.fullmatch(r"customers/(\d+)/userLists/(\d+)", metadata.get("userList") or "")
        if not found or found[1] != match["customer"]:
            raise _failure(400, "INVALID_ARGUMENT", {"offlineUserDataJobError": "INVALID_USER_LIST_ID"},
                           "The user list ID provided for the job is invalid.")
        consent = metadata.get("consent") or {}
        if {consent.get("adUserData"), consent.get("adPersonalization")} - CONSENT_VALUES:
            raise _failure(400, "INVALID_ARGUMENT", {"fieldError": "REQUIRED"},
                           "consent.adUserData and consent.adPersonalization must be GRANTED or DENIED.")
        job_id = str(next(self._ids))
        self.jobs[job_id] = Job(match["customer"], found[2],
                                consent_granted=consent["adUserData"] == consent["adPersonalization"] == "GRANTED")
        return {"resourceName": f"customers/{match['customer']}/offlineUserDataJobs/{job_id}"}

    def _job(self, match: re.Match) -> Job:
        job = self.jobs.get(match["job"])
        if job is None or job.customer_id != match["customer"]:
            raise _failure(404, "NOT_FOUND", {"requestError": "RESOURCE_NOT_FOUND"}, "Resource was not found.")
        return job

    def _add_operations(self, request: Request, match: re.Match) -> dict:
        self._auth(request, match)
        job = self._job(match)
        if job.status != "PENDING":
            raise _failure(400, "INVALID_ARGUMENT", {"offlineUserDataJobError": "JOB_NOT_PENDING"},
                           f"Operations can only be added to a PENDING job (this one is {job.status}).")
        body = request.json() or {}
        operations = body.get("operations")
        if not isinstance(operations, list) or not operations:
            raise _failure(400, "INVALID_ARGUMENT", {"fieldError": "REQUIRED"}, "operations is required.")
        self.operations_per_request.append(len(operations))
        users = [_user(op) for op in operations]
        if any(len(u[1]) > MAX_IDENTIFIERS_PER_USER for u in users) or \
                sum(len(u[1]) for u in users) > MAX_IDENTIFIERS_PER_REQUEST:
            raise _failure(400, "INVALID_ARGUMENT", {"offlineUserDataJobError": "TOO_MANY_USER_IDENTIFIERS"},
                           f"Maximum number of user identifiers allowed per request is "
                           f"{MAX_IDENTIFIERS_PER_REQUEST:,} and per operation is {MAX_IDENTIFIERS_PER_USER}.")
        kinds = {kind for kind, _ in users if kind != "removeAll"}
        if len(kinds | ({job.operation} if job.operation else set())) > 1:
            raise _failure(400, "INVALID_ARGUMENT", {"offlineUserDataJobError": "CONFLICTING_OPERATION"},
                           "Mixing creation and removal of offline data in the same job is not allowed.")
        for i, (kind, _) in enumerate(users):
            if kind == "removeAll" and (i or job.users or job.remove_all):
                raise _failure(400, "INVALID_ARGUMENT", {"offlineUserDataJobError": "INVALID_OPERATION_ORDER"},
                               "remove_all must be the first operation of the job.")
        errors, good = [], []
        for i, (kind, identifiers) in enumerate(users):
            if kind == "removeAll":
                good.append((kind, identifiers))
                continue
            problem = _problem(identifiers, self.rejected_hashes)
            if problem:
                errors.append(_error(i, kind, *problem))
            else:
                good.append((kind, identifiers))
        if errors and not body.get("enablePartialFailure"):
            raise Reject(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                         "message": "Request contains an invalid argument.",
                                         "details": [{"@type": FAILURE_TYPE.format(match["version"]),
                                                      "errors": errors}]}})
        for kind, identifiers in good:
            if kind == "removeAll":
                job.remove_all = True
            else:
                job.operation = kind
                job.users.append(identifiers)
        if not errors:
            return {}
        return {"partialFailureError": {
            "code": 3, "message": f"Multiple errors in 'details'. First error: {errors[0]['message']}",
            "details": [{"@type": FAILURE_TYPE.format(match["version"]), "errors": errors,
                         "requestId": f"emulator-{self.calls}"}]}}

    def _run(self, request: Request, match: re.Match) -> dict:
        self._auth(request, match)
        job = self._job(match)
        if self.concurrent_modifications:
            self.concurrent_modifications -= 1
            raise _failure(409, "ABORTED", {"databaseError": "CONCURRENT_MODIFICATION"},
                           "Multiple requests were attempting to modify the same resource at once. Retry the request.")
        if job.status != "PENDING":
            raise _failure(400, "INVALID_ARGUMENT", {"offlineUserDataJobError": "JOB_NOT_PENDING"},
                           f"The job can only be run once (it is {job.status}).")
        job.status, job.polls_left, job.fails = "RUNNING", self.job_polls, self.fail_jobs > 0
        self.fail_jobs -= job.fails
        if not job.polls_left:
            self._process(job)
        return {"name": f"customers/{match['customer']}/operations/{match['job']}"}

    def _process(self, job: Job) -> None:
        """The job's end: FAILED (nothing applied) or its operations applied, SUCCESS."""
        if job.fails:
            job.status = "FAILED"
            return
        if job.remove_all:
            self.clear(job.user_list_id)
        for identifiers in job.users:
            if job.operation == "remove":
                self.remove_user(job.user_list_id, identifiers)
            elif job.consent_granted:  # without consent Google does not use the data
                self.add_user(job.user_list_id, identifiers)
        job.status = "SUCCESS"

    def _search(self, request: Request, match: re.Match) -> dict:
        self._auth(request, match)
        query = (request.json() or {}).get("query") or ""
        found = re.search(r"FROM offline_user_data_job WHERE offline_user_data_job\.id (?:IN \(([\d,\s]+)\)|= (\d+))",
                          query)
        if not found:
            raise _failure(400, "INVALID_ARGUMENT", {"queryError": "UNEXPECTED_INPUT"},
                           "The emulator answers offline_user_data_job queries by id only.")
        wanted = re.findall(r"\d+", found[1] or found[2])
        results = []
        for job_id in wanted:
            job = self.jobs.get(job_id)
            if job is None or job.customer_id != match["customer"]:
                continue
            if job.status == "RUNNING":
                job.polls_left -= 1
                if job.polls_left <= 0:
                    self._process(job)
            row: dict[str, Any] = {"resourceName": f"customers/{job.customer_id}/offlineUserDataJobs/{job_id}",
                                   "status": job.status}
            if job.status == "SUCCESS":
                row["operationMetadata"] = {"matchRateRange": self.match_rate_range}
            if job.status == "FAILED":
                row["failureReason"] = "UNKNOWN"
            results.append({"offlineUserDataJob": row})
        return {"results": results, "fieldMask": "offlineUserDataJob.resourceName,offlineUserDataJob.status"}


def _user(operation: Any) -> tuple[str, tuple[tuple[str, str], ...]]:
    """("create" | "remove" | "removeAll", ((kind, value), ...)) of one operation."""
    if not isinstance(operation, dict) or len(operation) != 1:
        raise _failure(400, "INVALID_ARGUMENT", {"requestError": "INVALID_INPUT"},
                       "Each operation must set exactly one of create, remove, removeAll.")
    [(kind, data)] = operation.items()
    if kind == "removeAll" and data is True:
        return kind, ()
    if kind not in ("create", "remove") or not isinstance(data, dict):
        raise _failure(400, "INVALID_ARGUMENT", {"requestError": "INVALID_INPUT"},
                       f"Unknown operation {kind!r}.")
    identifiers = []
    for item in data.get("userIdentifiers") or []:
        pairs = [(IDENTIFIER_KINDS.get(k, k), v) for k, v in (item or {}).items()]
        identifiers.extend(pairs if len(pairs) == 1 else [("INVALID", "")])  # one identifier per UserIdentifier
    return kind, tuple(identifiers)


def _problem(identifiers: tuple[tuple[str, str], ...], rejected: set[str]) -> tuple[dict, str, int | None] | None:
    """(error code, message, identifier index) for an operation Google would refuse."""
    if not identifiers:
        return {"fieldError": "REQUIRED"}, "user_identifiers is required.", None
    for i, (kind, value) in enumerate(identifiers):
        if kind not in IDENTIFIER_KINDS.values():
            return {"requestError": "INVALID_INPUT"}, "Each UserIdentifier sets exactly one hashed identifier.", i
        if not isinstance(value, str) or not SHA256_HEX.fullmatch(value):
            return {"offlineUserDataJobError": "INVALID_SHA256_FORMAT"}, "The SHA256 encoded value is malformed.", i
        if value in rejected:
            return {"fieldError": "INVALID_VALUE"}, "The field's value is invalid.", i
    return None


def _error(operation_index: int, kind: str, code: dict, message: str, identifier_index: int | None) -> dict:
    path = [{"fieldName": "operations", "index": operation_index}, {"fieldName": kind}]
    if identifier_index is not None:
        path.append({"fieldName": "user_identifiers", "index": identifier_index})
    return {"errorCode": code, "message": message, "location": {"fieldPathElements": path}}


def _failure(status: int, grpc_status: str, code: dict, message: str, version: str = NEWEST) -> Reject:
    return Reject(status, {"error": {"code": status, "status": grpc_status, "message": message,
                                     "details": [{"@type": FAILURE_TYPE.format(version),
                                                  "errors": [{"errorCode": code, "message": message}]}]}})
