"""Email rules a destination may declare on top of trim + lower-case, and the API
version check every versioned destination gets from the base class."""

from __future__ import annotations

from datetime import date

import pytest
from winback.sync.destinations.base import ApiVersion, Destination, Settings
from winback.sync.identifiers import InvalidIdentifier, normalize_email


@pytest.mark.parametrize("raw, rules, expected", [
    (" Ivan.Petrov@Mail.RU ", (), "ivan.petrov@mail.ru"),
    ("J.Doe+promo@GMail.com", ("gmail",), "jdoe@gmail.com"),
    ("j.doe+promo@googlemail.com", ("gmail",), "jdoe@googlemail.com"),
    ("j.doe+promo@yandex.ru", ("gmail",), "j.doe+promo@yandex.ru"),  # only Google's own domains
    ("J.Doe+promo@GMail.com", (), "j.doe+promo@gmail.com"),  # a platform without the rule
    ("ivan petrov@mail.ru", ("no_inner_space",), "ivanpetrov@mail.ru"),
    ("ivan@mail.ru.", ("no_trailing_dot",), "ivan@mail.ru"),
])
def test_email_rules(raw, rules, expected):
    assert normalize_email(raw, rules) == expected


@pytest.mark.parametrize("raw, rules", [("ivan petrov@mail.ru", ()), ("ivan@mail.ru.", ()), ("+x@gmail.com", ("gmail",))])
def test_addresses_the_rules_cannot_save_are_refused_without_the_value(raw, rules):
    with pytest.raises(InvalidIdentifier) as raised:
        normalize_email(raw, rules)
    assert raw.split("@")[0] not in str(raised.value)


class _Options(Settings):
    api_version: str | None = None


class _Versioned(Destination):
    kind = "versioned"
    api_versions = (ApiVersion("v3", None, "https://example.com/versions"),
                    ApiVersion("v2", date(2026, 6, 1), "https://example.com/versions"))
    Options = _Options


def _instance(version: str | None) -> _Versioned:
    return _Versioned(name="d", audience="a", options=_Options(api_version=version), target=Settings(),
                      transport=None, secret=lambda name: "", base_url="https://example.com")


def test_the_newest_known_version_is_the_default_and_a_sunset_one_is_named():
    assert _instance(None).api_version == "v3"
    assert _instance(None).api_version_warning(date(2026, 11, 30)) is None
    assert _instance("v2").api_version_warning(date(2026, 5, 31)) is None
    warning = _instance("v2").api_version_warning(date(2026, 6, 1))
    assert "API version v2 was sunset on 2026-06-01 (https://example.com/versions)" in warning
    assert "set options.api_version to v3" in warning
    assert "not one Winback knows (the newest it knows is v3)" in _instance("v9").api_version_warning(date(2026, 1, 1))
