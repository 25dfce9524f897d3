"""Platforms that post webhooks to the hub: one package each, declaring one `Source`.

`SOURCES` is the registry the hub reads (name → webhooks.source.Source); a new platform is
a package beside these and one more entry below.
"""
from __future__ import annotations

from hub.errors import UnknownSource
from webhooks import chargebee, recharge, shopify, stripe
from webhooks.envelope import UNREADABLE, Envelope, body_hash_id, header, text_or_none
from webhooks.source import Source

__all__ = ["SOURCES", "SOURCE_NAMES", "UNREADABLE", "Envelope", "Source", "body_hash_id",
           "get_source", "header", "text_or_none", "webhook_secrets"]

SOURCES: dict[str, Source] = {
    source.name: source for source in (shopify.SOURCE, stripe.SOURCE, chargebee.SOURCE, recharge.SOURCE)
}
SOURCE_NAMES = tuple(SOURCES)


def get_source(name: str) -> Source:
    """The source of that name; raises hub.errors.UnknownSource."""
    try:
        return SOURCES[name]
    except KeyError:
        raise UnknownSource(name) from None


def webhook_secrets(settings) -> list[tuple[str, list[str]]]:
    """Each source with the names of its verification settings still unset (empty: configured)."""
    return [(name, [key for key in source.secret_settings if not getattr(settings, key)])
            for name, source in SOURCES.items()]
