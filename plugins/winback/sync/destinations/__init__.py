"""Destinations: one module per platform behind the protocol in `base.py`."""

from __future__ import annotations

import importlib

from winback.sync.destinations.base import Destination

# kind -> "module:Class"; modules are imported when a configuration names the kind.
KINDS: dict[str, str] = {
    "mailchimp": "winback.sync.destinations.mailchimp:Mailchimp",
    "unisender": "winback.sync.destinations.unisender:UniSender",
    "brevo": "winback.sync.destinations.brevo:Brevo",
    "sendpulse": "winback.sync.destinations.sendpulse:SendPulse",
    "meta_custom_audiences": "winback.sync.destinations.meta:MetaCustomAudiences",
    "google_ads_customer_match": "winback.sync.destinations.google_ads:GoogleAdsCustomerMatch",
    "google_data_manager": "winback.sync.destinations.google_data_manager:GoogleDataManager",
    "yandex_audience": "winback.sync.destinations.yandex_audience:YandexAudience",
    "vk_ads": "winback.sync.destinations.vk_ads:VkAds",
    "webhook": "winback.sync.destinations.webhook:Webhook",
    "csv": "winback.sync.destinations.csv_file:CsvFile",
}


def destination_class(kind: str) -> type[Destination]:
    try:
        module, name = KINDS[kind].split(":")
    except KeyError:
        raise ValueError(f"unknown destination kind {kind!r}; expected one of {', '.join(KINDS)}") from None
    return getattr(importlib.import_module(module), name)
