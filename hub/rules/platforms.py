"""What the rule layer asks of a billing platform, at its edges: registries by source.

The rules stay pure; these calls happen around them: update-payment links when a trigger
is stored, payment retries after a sweep commits (dunning mode `orchestrate`), product
ids of an inventory item before the stock rule runs. Each source registers its functions
from `webhooks/<source>_billing.py` (imported by `load()`), so no platform is named here.
"""
from __future__ import annotations

import logging
from importlib import import_module
from typing import Callable

from hub.rules.dunning import RETRIERS

log = logging.getLogger(__name__)

# source → (settings, customer id) → update-payment URL, or None when not configured.
LINKS: dict[str, Callable] = {}
# source → (settings, PaymentState, idempotency key) → None; raises on failure.
RETRY = RETRIERS
# source → (settings, inventory item id) → {"product_id", "variant_id"} (or {}).
ITEMS: dict[str, Callable] = {}
_loaded = False


def load() -> None:
    """Import every `webhooks/<source>_billing.py` once; each fills the registries."""
    global _loaded
    if _loaded:
        return
    from webhooks import SOURCE_NAMES

    for source in SOURCE_NAMES:
        try:
            import_module(f"webhooks.{source}_billing")
        except ModuleNotFoundError as exc:
            if exc.name != f"webhooks.{source}_billing":
                raise
    _loaded = True


def update_payment_url(settings, source: str | None, customer_id: str | None) -> str | None:
    """The platform's own page where this customer replaces their card (None: not known).

    A platform that cannot answer (down, misconfigured) costs the trigger its link, not
    the trigger: the flow still goes out, with the platform's link from the payload if any.
    """
    load()
    linker = LINKS.get(source or "")
    if settings is None or linker is None or not customer_id:
        return None
    try:
        return linker(settings, customer_id)
    except Exception as exc:  # noqa: BLE001 - any platform failure: keep the trigger
        log.warning("no update-payment link from %s for customer %s: %s", source, customer_id, exc)
        return None


def item_products(settings, source: str, item_id: str) -> dict:
    """Product and variant ids of an inventory item ({} when the source cannot tell).

    A lookup that fails raises: the inbox row is marked failed and `hub replay --failed`
    runs it again, rather than the stock rule silently finding nobody.
    """
    load()
    lookup = ITEMS.get(source)
    if settings is None or lookup is None or not item_id:
        return {}
    return lookup(settings, item_id) or {}
