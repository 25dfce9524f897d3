"""A platform the hub takes webhooks from, declared once in webhooks/<platform>/__init__.py.

Everything the hub asks of a platform is a field here, so the pipeline names no platform
and finds none by file name: the webhook view verifies and describes, the worker enriches
and normalizes, `hub backfill` and reconciliation list, the rules make customer pages,
retry payments and look up inventory items. A platform without one of these leaves it None.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from webhooks.envelope import Envelope
from webhooks.listing import Lister


class RetrySetup(NamedTuple):
    """Whether dunning mode `orchestrate` asks a source to charge a failed payment again with
    the settings given, in words for `hub install --check`; `missing`: not until a setting
    is set."""
    asked: bool
    words: str
    missing: bool = False


@dataclass(frozen=True)
class Source:
    name: str
    # Settings `verify` needs; any unset and the source answers 503 "not configured".
    secret_settings: tuple[str, ...]
    # (settings, headers, body) → None; raises hub.errors.SignatureInvalid unless authentic
    # (SourceNotConfigured, its subclass, when the source's secret is not set).
    verify: Callable[..., None]
    # (headers, body) → Envelope: dedupe id, topic and metadata; never raises (a body that
    # cannot be read gets an id from its hash and is failed later, when drained).
    describe: Callable[..., Envelope]
    # topic → pure normalizer (payload, envelope) → list[CanonicalEvent].
    topics: Mapping[str, Callable]
    # Where a delivery names its id and type, said on the failed-events page when `describe`
    # found neither.
    identified_by: str = "its body"
    # topic → (payload, settings) → payload, run by the worker before normalizing when a
    # webhook carries ids only (I/O lives here, not in normalizers).
    enrich: Mapping[str, Callable] = field(default_factory=dict)
    # The platform's listing API for `hub backfill` and reconciliation.
    lister: Lister | None = None
    # What a hub link of this source lands on, as the timeline says it ("Stripe portal").
    page_name: str | None = None
    # (settings, customer id, purpose, subscription id) → URL of the platform's page where
    # the customer does what the link is for (hub.models.link purposes), made at the click;
    # None when not configured. Raises when the platform cannot answer.
    customer_page: Callable[..., str | None] | None = None
    # (settings) → whether the hub can make this source's pages (keys, shop set).
    linkable: Callable[..., object] | None = None
    # (settings, payment, idempotency key) → None, asking the platform to charge again now
    # (dunning mode `orchestrate`); raises on failure.
    retry_payment: Callable[..., None] | None = None
    # (settings) → RetrySetup, or None when the source is not in use (nothing of it set).
    retry_setup: Callable[..., RetrySetup | None] | None = None
    # Where the merchant turns off the platform's own retries of failed payments, which it
    # announces on each failure (Payment.next_retry_at); None when it has none the hub asks beside.
    own_retries: str | None = None
    # (settings, inventory item id) → {"product_id", "variant_id"} (or {}); raises when the
    # platform cannot answer, so the inbox row fails and can be replayed.
    item_products: Callable[..., dict] | None = None

    def __post_init__(self):
        if (self.customer_page is None) != (self.linkable is None) or \
                (self.customer_page is not None and not self.page_name):
            raise ValueError(f"source {self.name!r}: customer_page, linkable and page_name "
                             "go together")
