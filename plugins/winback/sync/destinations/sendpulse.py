"""SendPulse mailing lists (address books): members added with their variables (an upsert)
and taken out of the list again, over an OAuth client-credentials token renewed before
its hour is up."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import Field, StringConstraints, field_validator

from winback.httperror import HttpError
from winback.sync.destinations.base import (
    ATTRIBUTES,
    Destination,
    Member,
    Outcome,
    PlatformId,
    Settings,
    batches,
    check_attribute_names,
)
from winback.sync.destinations.oauth import AccessToken

# sendpulse.com/integrations/api: "The request limit is 10 requests per second."
REQUESTS_PER_SECOND = 10
# sendpulse.com/integrations/api, Authorization: POST /oauth/access_token with grant_type
# client_credentials, client_id and client_secret answers access_token, token_type Bearer
# and expires_in (3600: "token TTL 1 h", github.com/sendpulse/sendpulse-skills,
# sendpulse-email-skill/references/api-reference.md).
TOKEN_PATH = "oauth/access_token"
TOKEN_LIFETIME = 3600.0  # seconds, when the answer has no expires_in
# DELETE /addressbooks/{id}/emails: "`emails` array — max 100" (sendpulse-skills,
# sendpulse-email-skill/references/address-books.md: "Remove: {"emails": [...]} — max 100
# per call"; the live reference is sendpulse.com/integrations/api/bulk-email).
MAX_REMOVE_EMAILS = 100
# POST /addressbooks/{id}/emails documents no cap on `emails`. Our choice, not SendPulse's:
# the removal cap, so one size of call serves both (1,000 addresses a second at the rate limit).
ADD_BATCH = 100
# Variable names on a mailing list (letters, digits, _ and spaces are what the account UI
# offers; "name" and "Phone" are SendPulse's own).
VARIABLE = r"^[A-Za-z0-9_ ]{1,64}$"
# SendPulse's messages may quote an address: errors keep the reason, not the person.
ADDRESS = re.compile(r"[^\s\"'<>,;:]+@[^\s\"'<>,;]+")
# Every attribute but product_ids (a list, not a field value).
FIELD_ATTRIBUTES = tuple(a for a in ATTRIBUTES if a != "product_ids")


class SendPulseOptions(Settings):
    variables: dict[str, Annotated[str, StringConstraints(pattern=VARIABLE)]] = Field(
        default_factory=lambda: {"first_name": "name"},
        description="audience attribute -> SendPulse variable of the mailing list (created on first use; "
                    "letters, digits, _ and spaces)")

    @field_validator("variables")
    @classmethod
    def _known(cls, value: dict[str, str]) -> dict[str, str]:
        return check_attribute_names(value)


class SendPulseTarget(Settings):
    list_id: PlatformId = Field(pattern=r"^\d+$", description="the mailing list (address book) id")


class SendPulse(Destination):
    kind = "sendpulse"
    channels = frozenset({"email"})
    # Email lists hold addresses; SendPulse's SMS lists (POST /sms/numbers) are another API.
    identifiers = ("email",)
    hashed = False  # it needs the real address to send to
    attributes = FIELD_ATTRIBUTES  # as variables, mapped by options.variables
    batch_size = ADD_BATCH
    remove_batch_size = MAX_REMOVE_EMAILS
    modes = ("mirror", "add_only")
    pool_slots = 1  # the request limit is per account
    min_interval = 1 / REQUESTS_PER_SECOND
    default_base_url = "https://api.sendpulse.com"
    secret_names = ("client_id", "client_secret")  # the account's REST API ID and Secret
    Options = SendPulseOptions
    Target = SendPulseTarget

    @classmethod
    def sent_attributes(cls, options: SendPulseOptions) -> tuple[str, ...]:
        return tuple(a for a in cls.attributes if a in options.variables)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.oauth = AccessToken(self, "SendPulse", self._obtain_token)

    # -- access token ----------------------------------------------------------------------
    def _obtain_token(self) -> tuple[str, float]:
        """A client-credentials token and its lifetime (oauth.py keeps and renews it)."""
        try:
            answer = self.http.request("POST", self.url(TOKEN_PATH), json={
                "grant_type": "client_credentials", "client_id": self.secret("client_id"),
                "client_secret": self.secret("client_secret")}).json() or {}
        except HttpError as exc:
            raise HttpError(f"{self.name}: SendPulse refused the client_id/client_secret (the REST API "
                            f"ID and Secret of the account's API settings): {exc}", exc.status, exc.body) from None
        if not answer.get("access_token"):
            raise HttpError(f"{self.name}: SendPulse's token endpoint answered without an access_token")
        return answer["access_token"], float(answer.get("expires_in") or TOKEN_LIFETIME)

    def _call(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        """One call on the list's emails; a 401 (token revoked or expired early) gets one
        new token, then stands."""
        path = f"addressbooks/{self.target.list_id}/emails"
        try:
            reply = self.oauth.request(method, self.url(path), json=body, pretend={"result": True})
        except HttpError as exc:
            raise HttpError(ADDRESS.sub("<address>", str(exc)), exc.status,
                            ADDRESS.sub("<address>", exc.body or "")) from None
        answer = reply.json() or {}
        if answer.get("result") is not True:
            # SendPulse's errors: {"error_code", "message"} or {"is_error": true, "message"}.
            raise HttpError(ADDRESS.sub("<address>", f"{method} SendPulse {path}: "
                            f"{answer.get('error_code') or 'error'}: {answer.get('message') or 'no result'}"),
                            reply.status_code)
        return answer

    # -- members ---------------------------------------------------------------------------
    def _variables(self, member: Member) -> dict[str, Any]:
        # A value that is gone is left out: whether an empty value clears a variable (and
        # what it does to a number or date variable) is not documented.
        return {name: member.attributes[attribute] for attribute, name in self.options.variables.items()
                if member.attributes.get(attribute) is not None}

    def add(self, members: Sequence[Member]) -> Outcome:
        """Add or update (SendPulse upserts by address), single opt-in: the engine sends
        only members who gave email consent. SendPulse answers {"result": true} for the
        call, with no per-address outcome."""
        outcome = Outcome()
        for batch in batches(members, ADD_BATCH):
            by_email = {m.ids["email"]: m for m in batch}  # customers sharing an address: one contact
            self._call("POST", {"emails": [{"email": email, "variables": self._variables(member)}
                                           for email, member in by_email.items()]})
            outcome.merge(Outcome.all_accepted(batch, sendpulse_added=len(by_email)))
        return outcome

    def remove(self, members: Sequence[Member]) -> Outcome:
        """Take addresses out of the mailing list (the contact keeps its other lists and
        is not unsubscribed or blacklisted)."""
        outcome = Outcome()
        for batch in batches(members, MAX_REMOVE_EMAILS):
            emails = list(dict.fromkeys(m.ids["email"] for m in batch))
            self._call("DELETE", {"emails": emails})
            outcome.merge(Outcome.all_accepted(batch, sendpulse_removed=len(emails)))
        return outcome

