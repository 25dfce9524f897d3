"""Recharge's Admin API (2021-11) as the hub calls it: the paged lists behind `hub backfill` and
reconciliation, the webhooks `hub install` registers, and the customer-portal link behind a
hub link. Plain HTTP (requests): Recharge publishes no Python SDK.

Every call carries `X-Recharge-Access-Token` (RECHARGE_API_KEY) and `X-Recharge-Version:
2021-11`, the version webhooks.recharge.webhook reads; without the header a token answers in
its own default version, whose lists give their cursors in a Link header instead of the body
(https://docs.getrecharge.com/docs/using-cursor-pagination-with-the-recharge-api).

Rate limit: a leaky bucket per token, 40 calls, leaking 2 a second, 429 when full
(https://docs.getrecharge.com/docs/api-rate-limits). The client paces itself at that rate and
a 429 waits as long as Retry-After says, else until the bucket has leaked room for the call
(X-Recharge-Limit, "<used>/<size>", says how full it is).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import requests

from hub.models.link import UPDATE_PAYMENT
from hub.values import retry_after
from webhooks.envelope import header
from webhooks.listing import Pacer
from webhooks.source import RetrySetup

DEFAULT_BASE = "https://api.rechargeapps.com"
API_VERSION = "2021-11"
BUCKET_SIZE, LEAK_PER_S = 40, 2.0
RETRIES = 8
TIMEOUT_S = 30
HUB_PATH = "/webhooks/recharge"  # where the hub takes Recharge's webhooks

# The portal page a hub link opens, by the link's purpose: the payment methods page to replace
# a card, the subscriptions page for the rest (the portal's destinations,
# https://storefront.getrecharge.com/client/docs/types/interfaces/CustomerPortalAccessOptions/).
PORTAL_PAGES = {UPDATE_PAYMENT: "payment_methods"}
PORTAL_DEFAULT_PAGE = "subscriptions"
# A Shopify store's portal is served through Recharge's app proxy on the shop's own domain
# (SHOPIFY_APP_PROXY_URL in Recharge's client, @rechargeapps/storefront-client 2.3.0).
SHOPIFY_APP_PROXY = "/tools/recurring"


@dataclass
class WebhookPlan:
    """What registration has to do: topics with no webhook of the hub's, and the hub's
    webhooks (id, topic) that point elsewhere (HUB_BASE_URL changed)."""

    create: list[str] = field(default_factory=list)
    repoint: list[tuple[object, str]] = field(default_factory=list)


def plan_webhooks(existing: list[dict], topics, address: str) -> WebhookPlan:
    """The webhooks to make or move so every topic posts to `address` (pure). A webhook is the
    hub's when it posts to `address`, or to another host's /webhooks/recharge."""
    plan = WebhookPlan()
    for topic in sorted(topics):
        mine = [w for w in existing if w.get("topic") == topic]
        if any(w.get("address") == address for w in mine):
            continue
        moved = next((w for w in mine if str(w.get("address", "")).endswith(HUB_PATH)), None)
        if moved is not None:
            plan.repoint.append((moved["id"], topic))
        else:
            plan.create.append(topic)
    return plan


class RechargeAPIError(Exception):
    """Recharge refused a call (bad token, unknown object); the message says which."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def is_configured(settings) -> bool:
    return bool(settings.RECHARGE_API_KEY)


def retry_setup(settings) -> RetrySetup | None:
    """Recharge retries a failed charge itself, on the store's retry intervals (Settings →
    Payment → Failed charges, https://support.rechargepayments.com/hc/en-us/articles/360030618053),
    so orchestrated retries do not ask it."""
    if not (is_configured(settings) or settings.RECHARGE_WEBHOOK_SECRET):
        return None
    return RetrySetup(False, "Recharge retries its failed charges itself, on the store's retry intervals")


def problem(settings) -> str | None:
    return None if is_configured(settings) else "not configured (set RECHARGE_API_KEY)"


def leak_wait(headers) -> float:
    """Seconds until the bucket has room for one more call, from X-Recharge-Limit."""
    used, _, size = (header(headers, "X-Recharge-Limit") or "").partition("/")
    try:
        over = int(used) + 1 - int(size)
    except ValueError:
        over = 1
    return max(1, over) / LEAK_PER_S


class Client:
    """One run's Recharge client: a requests session with the token and version headers, and a
    pacer at the bucket's leak rate."""

    def __init__(self, settings, pacer: Pacer | None = None, retries: int = RETRIES):
        self.base = (settings.RECHARGE_API_BASE or DEFAULT_BASE).rstrip("/")
        self.http = requests.Session()
        self.http.headers.update({"X-Recharge-Access-Token": settings.RECHARGE_API_KEY,
                                  "X-Recharge-Version": API_VERSION, "Accept": "application/json"})
        # Half the bucket as burst: the token's bucket is shared with the store's other apps.
        self.pacer = pacer or Pacer(LEAK_PER_S, burst=BUCKET_SIZE // 2)
        self.retries = retries

    def call(self, method: str, path: str, params: dict | None = None, body: dict | None = None) -> dict:
        """The JSON answer of one call ({} for 204); RechargeAPIError on a refusal."""
        url = f"{self.base}/{path.lstrip('/')}"
        for attempt in range(self.retries + 1):
            self.pacer.take()
            try:
                response = self.http.request(method, url, params=params, json=body, timeout=TIMEOUT_S)
            except requests.RequestException:
                if attempt == self.retries:
                    raise
                time.sleep(min(30.0, 0.5 * 2 ** attempt))
                continue
            if response.status_code == 429 and attempt < self.retries:
                self.pacer.hold(retry_after(response.headers, leak_wait(response.headers) * (attempt + 1)))
                continue
            if response.status_code >= 500 and attempt < self.retries:
                time.sleep(min(30.0, 0.5 * 2 ** attempt))
                continue
            if response.status_code >= 400:
                raise RechargeAPIError(f"Recharge answered HTTP {response.status_code} for {method} "
                                       f"/{path.lstrip('/')}: {response.text[:300]}", response.status_code)
            return response.json() if response.content else {}
        raise AssertionError("unreachable")

    def pages(self, resource: str, params: dict | None = None):
        """Every object of a list, page by page (cursor pagination)."""
        cursor = None
        while True:
            answer = self.call("GET", resource, {"limit": 250, "cursor": cursor} if cursor else
                               {"limit": 250, **(params or {})})
            yield from answer.get(resource) or []
            cursor = answer.get("next_cursor")
            if not cursor:
                return

    # Webhooks (hub install) -------------------------------------------------------------
    # One webhook per topic, `{"address", "topic"}`, made with POST /webhooks and moved with
    # PUT /webhooks/{id} (https://developer.rechargepayments.com/2021-11/webhooks_endpoints).

    def webhooks(self) -> list[dict]:
        return list(self.pages("webhooks"))

    def create_webhook(self, address: str, topic: str) -> dict:
        return self.call("POST", "webhooks", body={"address": address, "topic": topic})["webhook"]

    def point_webhook(self, webhook_id, address: str) -> dict:
        return self.call("PUT", f"webhooks/{webhook_id}", body={"address": address})["webhook"]

    # Customer portal (hub links) ---------------------------------------------------------

    def customer_hash(self, customer_id: str) -> str:
        """The hash the customer portal opens on (GET /customers/{id},
        https://docs.getrecharge.com/docs/build-a-recharge-hosted-customer-portal)."""
        customer = self.call("GET", f"customers/{customer_id}").get("customer") or {}
        if not customer.get("hash"):
            raise RechargeAPIError(f"Recharge gave no hash for customer {customer_id}")
        return str(customer["hash"])


def customer_page_url(settings, customer_id: str, purpose: str, subscription_id: str | None = None) -> str | None:
    """The store's Recharge customer portal page for the link's purpose, at the customer's hash
    (asked at the click); None when Recharge or the portal's address is not configured.

    Recharge's Admin API makes no temporary-token portal URL for a customer (those come from
    the Storefront API, with the customer's own session): the portal opens on the hash, and a
    visitor without a portal session signs in there with a code sent to their email.
    """
    if not is_linkable(settings):
        return None
    portal = portal_base(settings)
    # One retry at most: the customer's browser waits on this answer.
    client = Client(settings, retries=1)
    try:
        customer_hash = client.customer_hash(customer_id)
    finally:
        client.http.close()
    return f"{portal}/portal/{customer_hash}/{PORTAL_PAGES.get(purpose, PORTAL_DEFAULT_PAGE)}"


def is_linkable(settings) -> bool:
    """Whether hub links can open the portal: the API (for the hash) and the portal's address."""
    return is_configured(settings) and portal_base(settings) is not None


def portal_base(settings) -> str | None:
    """RECHARGE_PORTAL_URL, else the Shopify shop's app proxy."""
    if settings.RECHARGE_PORTAL_URL:
        return settings.RECHARGE_PORTAL_URL.rstrip("/")
    shop = (settings.SHOPIFY_SHOP or "").strip().removeprefix("https://").removeprefix("http://").strip("/")
    return f"https://{shop}{SHOPIFY_APP_PROXY}" if shop else None
