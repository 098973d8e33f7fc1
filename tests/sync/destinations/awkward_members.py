"""Awkward audience members, the one shared set for the official-SDK oracle tests: each
platform's test builds the same requests for these people with the platform's SDK and
with Winback, and compares them field by field.

Each is a different person (no two share an identifier, so a platform keyed by phone or
address does not merge them); what makes them awkward is how the shop wrote them:
Russian phones in their three usual spellings (a leading trunk 8 means +7, which an SDK
that only strips non-digits does not know), foreign numbers, mixed-case padded
addresses, Gmail dots and plus-tags, unicode addresses, a domain ending in a dot, and
people with only one of the two identifiers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sync_support import person


@dataclass(frozen=True)
class Awkward:
    key: str  # member_key (and customer_id)
    email: str | None  # as the shop wrote it
    phone: str | None  # as the shop wrote it
    e164: str | None  # the phone in E.164, read with default region RU (what Winback sends)
    why: str


AWKWARD_MEMBERS: tuple[Awkward, ...] = (
    Awkward("aw01", "  Ivan.Petrov@Example.COM ", "8 (999) 123-45-67", "+79991234567",
            "padded mixed-case address; trunk 8 with brackets and dashes"),
    Awkward("aw02", "John.Smith+winback@Gmail.com", "+7 999 123 45 68", "+79991234568",
            "Gmail dots and a plus-tag; +7 with spaces"),
    Awkward("aw03", "j.o.h.n.doe@googlemail.com", "89991234569", "+79991234569",
            "googlemail dots; trunk 8 written as bare digits"),
    Awkward("aw04", "иван@почта.рф", "+44 20 7946 0958", "+442079460958",
            "Cyrillic address and domain; a London number"),
    Awkward("aw05", "josé@exämple.com", "+1 (415) 555-2671", "+14155552671",
            "accented local part and domain; a US number with brackets"),
    Awkward("aw06", "Olga.Sidorova@Mail.RU.", "+7 (999) 123-45-70", "+79991234570",
            "a domain ending in a dot (some platforms strip it)"),
    Awkward("aw07", None, "8-999-123-45-71", "+79991234571", "a phone and no address"),
    Awkward("aw08", "\tMARIA@YANDEX.RU\n", None, None, "an address padded with tab and newline, no phone"),
)


def awkward_rows() -> list[dict[str, Any]]:
    """The awkward members as audience_members rows (sync_support.write_members)."""
    return [person(n, member_key=m.key, customer_id=m.key, email=m.email, phone=m.phone)
            for n, m in enumerate(AWKWARD_MEMBERS)]
