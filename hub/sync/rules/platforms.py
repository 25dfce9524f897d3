"""What the rule layer asks of a billing platform, at its edges: registries by source.

The rules stay pure; these calls happen around them: the customer's page behind a hub
link (`/l/<token>`) when it is clicked, payment retries after a sweep commits (dunning mode
`orchestrate`), product ids of an inventory item before the stock rule runs. Each source registers its functions
from `webhooks/<source>_billing.py` (imported by `load()`), so no platform is named here.
"""
from __future__ import annotations

from importlib import import_module
from typing import Callable

from hub.sync.rules.dunning import RETRIERS

# source → (settings, customer id, purpose, subscription id) → the URL of the platform's page
# where the customer does what the link is for (hub.models.link.PURPOSES), made now; None
# when not configured. Raises when the platform cannot answer.
LINKS: dict[str, Callable] = {}
# source → (settings) → whether the hub can make that source's pages (keys, shop set).
LINKABLE: dict[str, Callable] = {}
# source → what the customer lands on, as the timeline says it ("Stripe portal").
PAGE_NAMES: dict[str, str] = {}
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


def linked_sources(settings) -> frozenset[str]:
    """Sources configured to make a customer's page behind a hub link (others keep the
    platform's own link from the payload, if any)."""
    load()
    return frozenset(source for source in LINKS if source in LINKABLE and LINKABLE[source](settings))


def page_name(source: str) -> str | None:
    """What a hub link of this source lands on ("Stripe portal"), for the timeline."""
    load()
    return PAGE_NAMES.get(source)


def customer_page_url(settings, source: str, customer_id: str, purpose: str,
                      subscription_id: str | None = None) -> str | None:
    """The platform's page for this customer and purpose, made at the click (None: the source
    is not configured). Platform failures raise, for the caller to answer "try again later"."""
    load()
    linker = LINKS.get(source)
    if linker is None or not customer_id:
        return None
    return linker(settings, customer_id, purpose, subscription_id)


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
