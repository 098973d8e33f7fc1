"""Customer profiles: names, emails (unique, in the messy case and spacing of
real exports), phones in several formats, city, consents and the last profile edit."""

from __future__ import annotations

import numpy as np

from winback.sample_shop.spec import _INT_NA, CITIES
from winback.sample_shop.table import _Table
from winback.sample_shop.timeline import _Timeline

# Contacts.
PHONE_SHARE = 0.85
PROFILE_EDIT_SHARE = 0.25
EMAIL_ODD_CASE_SHARE = 0.07
EMAIL_UPPER_SHARE = 0.01
EMAIL_SPACES_SHARE = 0.03
CITY_SHARE = 0.95
SMS_CONSENT_SHARE = 0.5
ADS_CONSENT_SHARE = 0.65

FIRST_NAMES = (  # (Cyrillic, Latin, female)
    ("Александр", "aleksandr", 0), ("Дмитрий", "dmitry", 0), ("Максим", "maksim", 0),
    ("Сергей", "sergey", 0), ("Андрей", "andrey", 0), ("Алексей", "aleksey", 0),
    ("Иван", "ivan", 0), ("Михаил", "mikhail", 0), ("Артём", "artem", 0),
    ("Никита", "nikita", 0), ("Евгений", "evgeny", 0), ("Павел", "pavel", 0),
    ("Владимир", "vladimir", 0), ("Олег", "oleg", 0), ("Роман", "roman", 0),
    ("Илья", "ilya", 0), ("Анна", "anna", 1), ("Мария", "maria", 1), ("Елена", "elena", 1),
    ("Ольга", "olga", 1), ("Наталья", "natalya", 1), ("Татьяна", "tatyana", 1),
    ("Екатерина", "ekaterina", 1), ("Юлия", "yulia", 1), ("Ирина", "irina", 1),
    ("Светлана", "svetlana", 1), ("Анастасия", "anastasia", 1), ("Дарья", "darya", 1),
    ("Ксения", "ksenia", 1), ("Полина", "polina", 1), ("Виктория", "viktoria", 1),
    ("Алёна", "alena", 1),
)
LAST_NAMES = ("ivanov", "smirnov", "kuznetsov", "popov", "vasiliev", "petrov", "sokolov",
              "mikhailov", "novikov", "fedorov", "morozov", "volkov", "alekseev", "lebedev",
              "semenov", "egorov", "pavlov", "kozlov", "stepanov", "nikolaev")
EMAIL_DOMAINS = (("mail.ru", 0.35), ("yandex.ru", 0.25), ("gmail.com", 0.2), ("bk.ru", 0.05),
                 ("list.ru", 0.04), ("inbox.ru", 0.03), ("rambler.ru", 0.04), ("ya.ru", 0.04))


def _draw_profiles(rng, cust: _Table, tl: _Timeline, total_customers: int) -> None:
    """Names, emails, phones, city and consents; emails are unique by construction."""
    n = cust.n
    g = cust["g"]
    name_idx = rng.integers(0, len(FIRST_NAMES), n)
    female = np.array([f for _, _, f in FIRST_NAMES])[name_idx].astype(bool)
    first_lat = np.array([lat for _, lat, _ in FIRST_NAMES])[name_idx]
    last = np.array(LAST_NAMES)[rng.integers(0, len(LAST_NAMES), n)]
    last = np.where(female, np.char.add(last, "a"), last)
    # A bijection of the customer number: unique digits without looking sequential.
    digits = max(4, len(str(total_customers)))
    number = ((g * 7919 + 104_729) % (10 ** digits)).astype(np.str_)
    initial = np.array([lat[0] for _, lat, _ in FIRST_NAMES])[name_idx]
    pattern = rng.integers(0, 5, n)
    local = np.select(
        [pattern == 0, pattern == 1, pattern == 2, pattern == 3],
        [_join(first_lat, ".", last), _join(first_lat, "_", last), _join(initial, "", last),
         _join(last, ".", first_lat)],
        first_lat,
    )
    domain_p = np.array([p for _, p in EMAIL_DOMAINS])
    domain = np.array([d for d, _ in EMAIL_DOMAINS])[rng.choice(len(EMAIL_DOMAINS), n, p=domain_p / domain_p.sum())]
    email = np.char.add(np.char.add(np.char.add(local, number), "@"), domain)
    style = rng.random(n)
    email = np.where(style < EMAIL_ODD_CASE_SHARE, np.char.title(email), email)
    email = np.where((style >= EMAIL_ODD_CASE_SHARE) & (style < EMAIL_ODD_CASE_SHARE + EMAIL_UPPER_SHARE),
                     np.char.upper(email), email)
    spaces = rng.random(n) < EMAIL_SPACES_SHARE
    email = np.where(spaces, np.char.add(np.char.add(" ", email), np.where(rng.random(n) < 0.5, " ", "")), email)
    cust.cols["email_local"] = np.char.add(local, number)
    cust.cols["email"] = email
    cust.cols["phone"] = _phones(rng, g)
    cust.cols["has_phone"] = rng.random(n) < PHONE_SHARE
    cust.cols["name"] = np.array([cyr for cyr, _, _ in FIRST_NAMES])[name_idx]
    city_p = np.array([p for _, p in CITIES])
    cust.cols["city"] = rng.choice(len(CITIES), n, p=city_p / city_p.sum())
    cust.cols["has_city"] = rng.random(n) < CITY_SHARE
    cust.cols["sms"] = cust["has_phone"] & (rng.random(n) < SMS_CONSENT_SHARE / PHONE_SHARE)
    cust.cols["ads"] = rng.random(n) < ADS_CONSENT_SHARE
    edit = cust["reg"] + (rng.random(n) * (tl.end_ts - cust["reg"])).astype(np.int64)
    updated = np.where(rng.random(n) < PROFILE_EDIT_SHARE, edit, cust["reg"])
    unsub = cust["unsubscribed"]
    cust.cols["updated"] = np.where(unsub < _INT_NA, np.maximum(updated, unsub), updated)
    cust.cols["bad"] = np.zeros(n, np.int8)


def _join(a: np.ndarray, sep: str, b: np.ndarray) -> np.ndarray:
    return np.char.add(np.char.add(a, sep), b)


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    return np.strings.zfill(values.astype(np.str_), width)


def _phones(rng, g: np.ndarray) -> np.ndarray:
    """Russian mobile numbers in the formats shops really store side by side."""
    number = 9_000_000_000 + (g * 387_420_489 + 123_456_789) % 1_000_000_000
    code = _digits(number // 10_000_000, 3)
    a = _digits(number // 10_000 % 1_000, 3)
    b = _digits(number // 100 % 100, 2)
    c = _digits(number % 100, 2)
    plain = np.char.add(np.char.add(np.char.add(code, a), b), c)
    dashed = np.char.add(np.char.add(np.char.add(np.char.add(a, "-"), b), "-"), c)
    fmt = rng.integers(0, 4, g.size)
    return np.select(
        [fmt == 0, fmt == 1, fmt == 2],
        [np.char.add(np.char.add(np.char.add("8 (", code), ") "), dashed),
         np.char.add(np.char.add(np.char.add("+7 ", code), " "), dashed),
         np.char.add("7", plain)],
        np.char.add("+7", plain),
    )
