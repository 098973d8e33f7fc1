"""Destinations: one module per platform behind the protocol in `base.py`."""

from __future__ import annotations

import importlib

from winback.destinations.base import Destination

# kind -> "module:Class"; modules are imported when a configuration names the kind.
KINDS: dict[str, str] = {
    "mailchimp": "winback.destinations.mailchimp:Mailchimp",
    "unisender": "winback.destinations.unisender:UniSender",
    "brevo": "winback.destinations.brevo:Brevo",
    "sendpulse": "winback.destinations.sendpulse:SendPulse",
    "meta_custom_audiences": "winback.destinations.meta:MetaCustomAudiences",
    "google_ads_customer_match": "winback.destinations.google_ads:GoogleAdsCustomerMatch",
    "google_data_manager": "winback.destinations.google_data_manager:GoogleDataManager",
    "yandex_audience": "winback.destinations.yandex_audience:YandexAudience",
    "vk_ads": "winback.destinations.vk_ads:VkAds",
    "webhook": "winback.destinations.webhook:Webhook",
    "csv": "winback.destinations.csv_file:CsvFile",
}


def destination_class(kind: str) -> type[Destination]:
    try:
        module, name = KINDS[kind].split(":")
    except KeyError:
        raise ValueError(f"unknown destination kind {kind!r}; expected one of {', '.join(KINDS)}") from None
    return getattr(importlib.import_module(module), name)
