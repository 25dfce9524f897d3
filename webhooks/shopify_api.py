"""The few Admin GraphQL calls the Shopify normalizers need, through the ShopifyAPI package.

Subscription contract and billing-attempt webhooks carry ids only, so the worker fetches
the contract here before normalizing (webhooks.shopify.ENRICH). Tests and the demo point
SHOPIFY_ADMIN_URL at a local stand-in of the Admin API (webhooks/standins/shopify.py).
"""
from __future__ import annotations

import json
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

import shopify

from hub.errors import HubError

# `email` and `phone` are deprecated on Customer since 2025-04 (defaultEmailAddress /
# defaultPhoneNumber) but still answered, and unlike the new fields they exist in every
# API version a merchant may have configured.
CONTRACT_QUERY = """
query HubSubscriptionContract($id: ID!) {
  subscriptionContract(id: $id) {
    id
    status
    updatedAt
    nextBillingDate
    currencyCode
    customer { id email firstName lastName phone }
    billingPolicy { interval intervalCount }
    lines(first: 50) {
      nodes {
        productId variantId title quantity
        currentPrice { amount currencyCode }
        sellingPlanId sellingPlanName
      }
    }
    customerPaymentMethod { id }
  }
}
"""


TIMEOUT_SECONDS = 30


class ShopifyAPIError(HubError):
    """The Admin API answered with errors (or not at all); the message says which."""


class _GraphQL(shopify.GraphQL):
    """ShopifyAPI's client (endpoint and headers from the active session) with a timeout:
    its own execute() waits forever on a silent server, which would stall a worker's batch."""

    def execute(self, query, variables=None, operation_name=None):
        headers = self.merge_headers(
            {"Accept": "application/json", "Content-Type": "application/json"}, self.headers)
        data = json.dumps({"query": query, "variables": variables, "operationName": operation_name})
        request = Request(self.endpoint, data.encode(), headers)
        with urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            return response.read().decode("utf-8")


def is_configured(settings) -> bool:
    """Whether the hub can call the Admin API (a shop and an access token)."""
    return bool(settings.SHOPIFY_SHOP and settings.SHOPIFY_ACCESS_TOKEN)


def contract_gid(contract_id) -> str:
    """The GraphQL id of a contract from its numeric id or its gid."""
    text = str(contract_id)
    return text if text.startswith("gid://") else f"gid://shopify/SubscriptionContract/{text}"


def fetch_contract(settings, contract_id) -> dict:
    """The subscription contract as a plain dict (the GraphQL node); raises ShopifyAPIError."""
    gid = contract_gid(contract_id)
    data = execute(settings, CONTRACT_QUERY, {"id": gid})
    contract = data.get("subscriptionContract")
    if contract is None:
        # Null without errors: gone, or not readable with this app's scopes
        # (read_own_subscription_contracts only shows the app's own contracts).
        raise ShopifyAPIError(f"subscription contract {gid} not found or not readable by this app")
    return contract


def execute(settings, query: str, variables: dict | None = None) -> dict:
    """`data` of a GraphQL query; raises ShopifyAPIError on transport or GraphQL errors."""
    session = shopify.Session(settings.SHOPIFY_SHOP, settings.SHOPIFY_API_VERSION,
                              settings.SHOPIFY_ACCESS_TOKEN)
    shopify.ShopifyResource.activate_session(session)
    try:
        if settings.SHOPIFY_ADMIN_URL:
            # Session always builds https://<shop>.myshopify.com/admin/api/<version> and GraphQL()
            # posts to ShopifyResource.site + "/graphql.json": keep the path, swap the host.
            base = settings.SHOPIFY_ADMIN_URL.rstrip("/")
            shopify.ShopifyResource.site = base + urlparse(session.site).path
        raw = _GraphQL().execute(query, variables)
    except HTTPError as exc:
        with exc:  # Shopify's own words (bad token, missing scope) belong in the sync log
            detail = exc.read().decode("utf-8", "replace")[:300]
        raise ShopifyAPIError(f"Shopify Admin API answered HTTP {exc.code}: {detail}") from exc
    except (URLError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ShopifyAPIError(f"Shopify Admin API unreachable: {reason}") from exc
    finally:
        shopify.ShopifyResource.clear_session()
    answer = json.loads(raw)
    errors = answer.get("errors")
    if errors:
        errors = errors if isinstance(errors, list) else [errors]  # some answers carry one string
        raise ShopifyAPIError("; ".join(_error_message(e) for e in errors))
    return answer.get("data") or {}


def _error_message(error) -> str:
    if not isinstance(error, dict):
        return str(error)
    code = (error.get("extensions") or {}).get("code")
    return f"{error.get('message', 'unknown error')}" + (f" ({code})" if code else "")
