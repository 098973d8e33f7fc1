"""Local stand-ins for the platforms' APIs (contract tests, benchmarks, trying a sync
without an account): `python -m winback.emulators KIND [--port N]`."""

from __future__ import annotations

import importlib

# destination (or source) kind -> "module:Class" of its emulator
EMULATORS: dict[str, str] = {
    "mailchimp": "winback.emulators.mailchimp:MailchimpEmulator",
    "unisender": "winback.emulators.unisender:UniSenderEmulator",
    "brevo": "winback.emulators.brevo:BrevoEmulator",
    "sendpulse": "winback.emulators.sendpulse:SendPulseEmulator",
    "meta_custom_audiences": "winback.emulators.meta:MetaEmulator",
    "google_ads_customer_match": "winback.emulators.google_ads:GoogleAdsEmulator",
    "google_data_manager": "winback.emulators.google_data_manager:GoogleDataManagerEmulator",
    "yandex_audience": "winback.emulators.yandex_audience:YandexAudienceEmulator",
    "yandex_metrica": "winback.emulators.yandex_metrica:YandexMetricaEmulator",
    "vk_ads": "winback.emulators.vk_ads:VkAdsEmulator",
    "webhook": "winback.emulators.webhook:WebhookEmulator",
}


def emulator_class(kind: str):
    try:
        module, name = EMULATORS[kind].split(":")
    except KeyError:
        raise ValueError(f"no emulator for {kind!r}; there are: {', '.join(EMULATORS)}") from None
    return getattr(importlib.import_module(module), name)
