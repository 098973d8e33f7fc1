"""Identifier normalization and hashing, the one place for it: each destination says
which form it wants (docs/platforms.md, "Identifier normalization"), and values that
cannot be normalized become row errors, never sent raw."""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from typing import Literal

PhoneFormat = Literal["e164", "digits"]
# Platform-specific email rules a destination may declare on top of trim + lower-case:
# - "no_inner_space": remove whitespace inside the address (Google's normalization);
# - "gmail": for gmail.com / googlemail.com drop every dot before "@" and a "+tag"
#   (Google Data Manager's rule for those domains);
# - "no_trailing_dot": drop a dot ending the domain ("ivan@mail.ru.", as Meta's SDK does).
EmailRule = Literal["no_inner_space", "gmail", "no_trailing_dot"]
GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})

# Deliberately loose: one @, no spaces, a dot in the domain. Platforms validate
# further and report per-row errors; we only refuse what is clearly not an address.
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")


class InvalidIdentifier(ValueError):
    """A value that cannot be turned into the form a platform accepts (the message
    never contains the value itself: it may end up in a log)."""


def normalize_email(value: str, rules: frozenset[EmailRule] | tuple[EmailRule, ...] = ()) -> str:
    """Trimmed and lower-cased, then the platform's own `rules` (see EmailRule)."""
    email = value.strip().lower()
    if "no_inner_space" in rules:
        email = re.sub(r"\s+", "", email)
    if "no_trailing_dot" in rules:
        email = email.rstrip(".")
    if not _EMAIL.fullmatch(email):
        raise InvalidIdentifier("email: not an address (expected name@domain.tld)")
    if "gmail" in rules:
        local, domain = email.rsplit("@", 1)
        if domain in GMAIL_DOMAINS:
            local = local.split("+", 1)[0].replace(".", "")
            if not local:
                raise InvalidIdentifier("email: nothing left of the name before @ after Gmail's rules")
            email = f"{local}@{domain}"
    return email


@lru_cache(maxsize=65_536)
def _e164(value: str, region: str) -> str:
    import phonenumbers  # its metadata is large: only when a phone is normalized

    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        raise InvalidIdentifier(f"phone: not a phone number (default region {region})") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidIdentifier(f"phone: not a valid number (default region {region})")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_phone(value: str, region: str, style: PhoneFormat = "e164") -> str:
    """`8 (912) 345-67-89` with region RU -> `+79123456789` (e164) or `79123456789`
    (digits: Meta, VK). A leading trunk 8 is read as the region's national prefix."""
    return phone_in_format(phone_e164(value, region), style)


def phone_e164(value: str, region: str) -> str:
    """The phone in E.164, the one form kept (identifier_cache.py); the others derive from it."""
    return _e164(value.strip(), region)


def phone_in_format(e164: str, style: PhoneFormat) -> str:
    return e164 if style == "e164" else e164[1:]


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def md5_hex(value: str) -> str:
    """Mailchimp's member id: md5 of the lowercased address (not a security hash)."""
    return hashlib.md5(value.encode("utf-8"), usedforsecurity=False).hexdigest()
