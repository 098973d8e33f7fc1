"""Mailchimp Marketing API: contacts subscribed or updated in an audience (list) in
batches, and the audience's membership kept as a static segment (or tag) of that list."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import Field, field_validator

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

# mailchimp.com/developer, "Batch subscribe or unsubscribe": "Up to 500 members may be
# added or updated with each API call."
MAX_MEMBERS_PER_BATCH = 500
# Same reference, "Batch add or remove members from static segment": at most 500
# addresses in members_to_add and in members_to_remove per call.
MAX_SEGMENT_CHANGES = 500
# Mailchimp allows 10 simultaneous connections per account (docs/platforms.md). Each sync
# task keeps one request in flight, so 5 tasks use half of the account's allowance and
# leave the rest to the account's other integrations (shop plugin, forms, Zapier).
ACCOUNT_CONNECTIONS = 10
POOL_SLOTS = ACCOUNT_CONNECTIONS // 2
# Throttling answers 429 and sometimes 403, without rate-limit headers (docs/platforms.md).
THROTTLE_STATUSES = frozenset({403})
# The batch endpoint's member object has `status` and no `status_if_new` (that field
# exists only on PUT /lists/{id}/members/{hash}); the engine only sends members who gave
# email consent, so new contacts come in subscribed.
SUBSCRIBED = "subscribed"
# With update_existing false, Mailchimp refuses existing contacts with this code; they
# are on the list already, which is all the segment needs.
ALREADY_A_MEMBER = "ERROR_CONTACT_EXISTS"
# The API key ends in its data centre ("...-us21"), which names the API host.
BASE_URL_TEMPLATE = "https://{dc}.api.mailchimp.com"
# Merge tags are upper-case, at most 10 characters (Mailchimp's audience-field settings).
MERGE_TAG = re.compile(r"[A-Z0-9_]{1,10}")
# Every attribute but product_ids (a list, not a field value).
FIELD_ATTRIBUTES = tuple(a for a in ATTRIBUTES if a != "product_ids")


class MailchimpOptions(Settings):
    merge_fields: dict[str, str] = Field(
        default_factory=lambda: {"first_name": "FNAME"},
        description="audience attribute -> merge tag; FNAME exists in a new audience, create the others first")
    update_existing: bool = Field(
        default=True, description="update existing contacts' merge fields (and status) too; false leaves them "
                                  "untouched and only puts them in the segment")

    @field_validator("merge_fields")
    @classmethod
    def _known(cls, value: dict[str, str]) -> dict[str, str]:
        check_attribute_names(value)
        bad = [tag for tag in value.values() if not MERGE_TAG.fullmatch(tag)]
        if bad:
            raise ValueError(f"merge tags are upper-case, at most 10 characters: {', '.join(bad)}")
        return value


class MailchimpTarget(Settings):
    list_id: PlatformId = Field(pattern=r"^[0-9a-zA-Z]+$", description="the audience (list) id")
    segment_id: PlatformId = Field(pattern=r"^\d+$",
                            description="a static segment of that list; a tag's id works too (tags are static segments)")


class Mailchimp(Destination):
    kind = "mailchimp"
    channels = frozenset({"email"})
    identifiers = ("email",)  # Mailchimp contacts are addresses; a phone alone makes no contact
    hashed = False  # it needs the real address to send to
    attributes = FIELD_ATTRIBUTES  # as merge fields, mapped by options.merge_fields
    batch_size = MAX_MEMBERS_PER_BATCH
    remove_batch_size = MAX_SEGMENT_CHANGES
    modes = ("mirror", "add_only")
    pool_slots = POOL_SLOTS
    retry_statuses = THROTTLE_STATUSES
    default_base_url = BASE_URL_TEMPLATE
    Options = MailchimpOptions
    Target = MailchimpTarget

    @classmethod
    def sent_attributes(cls, options: MailchimpOptions) -> tuple[str, ...]:
        return tuple(a for a in cls.attributes if a in options.merge_fields)

    # -- HTTP --------------------------------------------------------------------------
    def _api_base(self) -> str:
        if "{dc}" not in self.base_url:
            return self.base_url
        key = self.secret("token")
        if not key:
            return self.base_url.replace("{dc}", "<dc>")  # a dry run without credentials
        prefix, _, dc = key.rpartition("-")
        if not prefix or not dc.isalnum():
            from winback.credentials import SecretError

            raise SecretError(f"destinations.{self.name}: the Mailchimp API key has no data-centre suffix "
                              "(it ends in -us21 or similar); set base_url to choose the host")
        return self.base_url.replace("{dc}", dc)

    def _post(self, path: str, body: dict[str, Any], pretend: dict[str, Any]) -> dict[str, Any]:
        reply = self.http.request("POST", f"{self._api_base()}/3.0/{path}", json=body,
                                  auth=("winback", self.secret("token")), pretend=pretend)
        return reply.json() or {}

    # -- members -----------------------------------------------------------------------
    def _merge_fields(self, member: Member) -> dict[str, Any]:
        # An empty string clears a field whose value is gone, so the audience follows ours.
        return {tag: ("" if member.attributes.get(name) is None else member.attributes[name])
                for name, tag in self.options.merge_fields.items()}

    def add(self, members: Sequence[Member]) -> Outcome:
        outcome = Outcome()
        for batch in batches(members, MAX_MEMBERS_PER_BATCH):
            by_email = _by_email(batch)
            body = {"members": [{"email_address": email, "status": SUBSCRIBED,
                                 "merge_fields": self._merge_fields(keyed[0])}
                                for email, keyed in by_email.items()],
                    "update_existing": self.options.update_existing}
            answer = self._post(f"lists/{self.target.list_id}", body, pretend={"errors": []})
            rejected: dict[str, str] = {}
            for error in answer.get("errors") or []:
                email = str(error.get("email_address", "")).lower()
                if error.get("error_code") == ALREADY_A_MEMBER and not self.options.update_existing:
                    continue
                for member in by_email.get(email, ()):
                    rejected[member.key] = _reason(error.get("error_code"), error.get("error"), email)
            on_list = [email for email, keyed in by_email.items() if keyed[0].key not in rejected]
            segment = self._segment(on_list, "members_to_add", by_email) if on_list else Outcome()
            outcome.merge(Outcome(
                accepted=[m.key for m in batch if m.key not in rejected and m.key not in segment.rejected],
                rejected={**rejected, **segment.rejected},
                figures={"total_created": answer.get("total_created", 0),
                         "total_updated": answer.get("total_updated", 0),
                         "total_added_to_segment": segment.figures.get("total_added", 0)}))
        return outcome

    def remove(self, members: Sequence[Member]) -> Outcome:
        """Take members out of the segment only: they stay on the list, subscribed, and
        keep getting whatever else the audience's owner sends them."""
        outcome = Outcome()
        for batch in batches(members, MAX_SEGMENT_CHANGES):
            by_email = _by_email(batch)
            segment = self._segment(list(by_email), "members_to_remove", by_email)
            outcome.merge(Outcome(accepted=[m.key for m in batch if m.key not in segment.rejected],
                                  rejected=segment.rejected,
                                  figures={"total_removed_from_segment": segment.figures.get("total_removed", 0)}))
        return outcome

    def _segment(self, emails: list[str], field: str, by_email: dict[str, list[Member]]) -> Outcome:
        answer = self._post(f"lists/{self.target.list_id}/segments/{self.target.segment_id}",
                            {field: emails}, pretend={"errors": []})
        rejected = {}
        for error in answer.get("errors") or []:
            for email in error.get("email_addresses") or []:
                for member in by_email.get(str(email).lower(), ()):
                    rejected[member.key] = _reason("segment", error.get("error"), str(email))
        return Outcome(rejected=rejected, figures={"total_added": answer.get("total_added", 0),
                                                   "total_removed": answer.get("total_removed", 0)})


def _by_email(members: Sequence[Member]) -> dict[str, list[Member]]:
    """Members by address: two customers sharing one address are one Mailchimp contact,
    sent once (Mailchimp refuses duplicates within a batch)."""
    out: dict[str, list[Member]] = {}
    for member in members:
        out.setdefault(member.ids["email"], []).append(member)
    return out


def _reason(code: Any, message: Any, email: str) -> str:
    """Mailchimp's reason without the address it usually quotes (row errors are read by
    people who need the reason, not the personal data)."""
    text = re.sub(re.escape(email), "<address>", str(message or "rejected"), flags=re.IGNORECASE) if email \
        else str(message or "rejected")
    return f"Mailchimp {code}: {text}" if code else f"Mailchimp: {text}"
