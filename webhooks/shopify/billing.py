"""Shopify calls of the rule layer: the customer account URL (update-payment links), a
billing attempt on the dunning cadence (mode `orchestrate`), and the product of an
inventory item (inventory webhooks name the item only).

Declared in webhooks.shopify.SOURCE; GraphQL goes through ShopifyAPI
(webhooks.shopify.api), paced by the app's query-cost bucket on the store (shared_pacer),
against the Admin API stand-in in tests.
"""
from __future__ import annotations

from hub.errors import RetryLater
from hub.values import iso
from webhooks.shopify import api as shopify_api
from webhooks.source import RetrySetup

BILLING_ATTEMPT = """
mutation HubBillingAttempt($contract: ID!, $input: SubscriptionBillingAttemptInput!) {
  subscriptionBillingAttemptCreate(subscriptionContractId: $contract, subscriptionBillingAttemptInput: $input) {
    subscriptionBillingAttempt { id ready errorMessage }
    userErrors { field message code }
  }
}
"""

INVENTORY_ITEM = """
query HubInventoryItem($id: ID!) {
  inventoryItem(id: $id) { id variant { id product { id } } }
}
"""


def _number(gid) -> str | None:
    """The number of a gid, as the normalizers store ids ("gid://shopify/Product/7" → "7")."""
    return str(gid).rsplit("/", 1)[-1] if gid else None


def shop_domain(settings) -> str:
    """The shop's domain from SHOPIFY_SHOP, bare (empty: not configured)."""
    return (settings.SHOPIFY_SHOP or "").strip().removeprefix("https://").removeprefix("http://").strip("/")


def account_url(settings, customer_id: str, purpose: str, subscription_id: str | None = None) -> str | None:
    """The shop's customer account page, where a subscriber updates their payment method and
    manages or cancels their subscriptions (every purpose lands there).

    The same address serves classic and new customer accounts (the shop redirects); no
    call is needed, so this also works while the Admin API is unreachable.
    """
    shop = shop_domain(settings)
    return f"https://{shop}/account" if shop else None


def retry_setup(settings) -> RetrySetup | None:
    """Whether orchestrated retries ask Shopify: only for contracts the hub's app owns."""
    if not settings.SHOPIFY_SHOP:
        return None
    if settings.SHOPIFY_OWNS_CONTRACTS:
        return RetrySetup(True, "Shopify is asked for a billing attempt on the contract")
    return RetrySetup(False, "Shopify's failed payments are retried by the store's subscription app, which owns "
                             "the contracts (SHOPIFY_OWNS_CONTRACTS is off)")


def create_billing_attempt(settings, payment, idempotency_key: str) -> None:
    """Ask Shopify to charge the contract again now; the key makes a repeat a no-op. No
    answer, or Shopify's own trouble, raises RetryLater; a refusal raises ShopifyAPIError."""
    if not settings.SHOPIFY_OWNS_CONTRACTS:
        # Only the app that owns a contract may bill it (write_own_subscription_contracts).
        raise shopify_api.ShopifyAPIError(
            f"not retried: payment {payment.source_id}'s contract belongs to the store's subscription app, "
            "which retries it itself (SHOPIFY_OWNS_CONTRACTS is off)")
    contract = payment.subscription_source_id
    if not contract:
        raise shopify_api.ShopifyAPIError(f"billing attempt {payment.source_id} names no contract")
    # Shopify keeps idempotency keys for a while; it caps their length.
    attempt = {"idempotencyKey": idempotency_key[:255]}
    failed_at = payment.first_failed_at or payment.due_at
    if failed_at is not None:
        # The cycle that failed, picked by a date in it: without a selector Shopify bills "the
        # current billing cycle", the next one once a retry falls an interval after the
        # failure (https://shopify.dev/docs/api/admin-graphql/latest/input-objects/
        # SubscriptionBillingAttemptInput, SubscriptionBillingCycleSelector).
        attempt["billingCycleSelector"] = {"date": iso(failed_at)}
    try:
        data = shopify_api.shared_pacer(settings).execute(settings, "billing_attempt", BILLING_ATTEMPT, {
            "contract": shopify_api.contract_gid(contract), "input": attempt})
    except shopify_api.ShopifyAPIError as exc:
        if exc.transient:  # asked again later with the same key (hub.sync.retries)
            raise RetryLater(0, str(exc)) from exc
        raise
    errors = (data.get("subscriptionBillingAttemptCreate") or {}).get("userErrors") or []
    throttled = [e for e in errors if e.get("code") == "THROTTLED"]
    if throttled:
        # From API 2026-01 Shopify may throttle billing attempts ("based on internal trust
        # metrics", https://shopify.dev/changelog/subscription-billing-attempts-throttling),
        # naming no wait: asked again later with the same key, on hub.sync.retries' schedule.
        raise RetryLater(0, throttled[0].get("message") or "billing attempt throttled")
    if errors:
        # e.g. CONTRACT_PAUSED, CONTRACT_TERMINATED: Shopify bills only an active contract
        # (https://shopify.dev/docs/api/admin-graphql/latest/enums/BillingAttemptUserErrorCode).
        raise shopify_api.ShopifyAPIError(
            "; ".join(e.get("message", "?") + (f" ({e['code']})" if e.get("code") else "") for e in errors),
            codes=tuple(str(e["code"]) for e in errors if e.get("code")))


def inventory_item_products(settings, item_id: str) -> dict:
    """{"product_id", "variant_id"} of an inventory item (numbers, as contracts store them).
    No answer raises RetryLater; a refusal (a revoked token, a missing scope) ShopifyAPIError."""
    if not shopify_api.is_configured(settings):
        return {}
    gid = item_id if str(item_id).startswith("gid://") else f"gid://shopify/InventoryItem/{item_id}"
    try:
        item = shopify_api.shared_pacer(settings).execute(settings, "inventory", INVENTORY_ITEM,
                                                          {"id": gid}).get("inventoryItem") or {}
    except shopify_api.ShopifyAPIError as exc:
        if exc.transient:  # the webhook waits and tries again by itself (hub.sync.inbox)
            raise RetryLater(0, f"Shopify did not answer the inventory item's query: {exc}") from exc
        raise
    variant = item.get("variant") or {}
    return {"variant_id": _number(variant.get("id")), "product_id": _number((variant.get("product") or {}).get("id"))}
