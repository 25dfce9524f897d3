"""The hub's Admin API calls, through the ShopifyAPI package: the access token, the contract
fetch the normalizers need, and the webhook subscriptions `hub install` registers.

Subscription contract and billing-attempt webhooks carry ids only, so the worker fetches
the contract here before normalizing (webhooks.shopify.webhook.ENRICH). Tests and the demo point
SHOPIFY_ADMIN_URL at a local stand-in of the Admin API (standins/shopify.py).

Token: SHOPIFY_ACCESS_TOKEN when set; otherwise the client-credentials grant of a Dev
Dashboard app (SHOPIFY_CLIENT_ID/SECRET), whose tokens expire after about 24 h. Granted
tokens are cached per process with their expiry, renewed shortly before it and once on a
401, and shared by every caller (contract fetch, install, backfill).

After app/uninstalled (hub.sync.compliance.record_uninstalled) no call goes out: `execute` raises
ShopifyUninstalled and the contract enrichment leaves payloads as they came.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode, urlparse
from urllib.request import Request, urlopen

import shopify
from sqlalchemy import create_engine, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from hub.errors import HubError
from hub.models import UNINSTALLED, Checkpoint
from hub.values import asks_again, utc
from webhooks.listing import Pacer

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


# A contract's upcoming billing cycles: a skipped one keeps the contract's nextBillingDate
# ("This field is managed by the apps. Alternatively you can utilize our Billing Cycles APIs,
# which provide auto-computed billing dates",
# https://shopify.dev/docs/api/admin-graphql/latest/objects/SubscriptionContract), so the next
# renewal is the first cycle neither skipped nor billed
# (https://shopify.dev/docs/api/admin-graphql/latest/queries/subscriptionBillingCycles).
CYCLES_QUERY = """
query HubBillingCycles($id: ID!, $from: DateTime!, $until: DateTime!, $after: String) {
  subscriptionBillingCycles(contractId: $id, first: 10, after: $after,
                            billingCyclesDateRangeSelector: {startDate: $from, endDate: $until}) {
    nodes { cycleIndex billingAttemptExpectedDate skipped status edited }
    pageInfo { hasNextPage endCursor }
  }
}
"""
# A cycle whose contract was edited for it alone (another product, quantity or price: a billing
# cycle contract draft committed) bills its edited lines, not the contract's
# (https://shopify.dev/docs/apps/build/purchase-options/subscriptions/billing-cycles/manage-billing-cycle-contracts,
# https://shopify.dev/docs/api/admin-graphql/latest/objects/SubscriptionBillingCycleEditedContract).
EDITED_CYCLE_QUERY = """
query HubEditedCycle($id: ID!, $index: Int!) {
  subscriptionBillingCycle(billingCycleInput: {contractId: $id, selector: {index: $index}}) {
    cycleIndex
    editedContract {
      currencyCode
      lines(first: 50) { nodes { quantity currentPrice { amount currencyCode } } }
    }
  }
}
"""
# From a day before the contract's next billing date (a cycle's expected time may fall before
# that date's) to a yearly plan's next cycle after it.
CYCLES_SINCE = timedelta(days=1)
CYCLES_UNTIL = timedelta(days=400)
# Pages read at most: a daily plan's year is 40 of them; a cursor that never ends stops here.
CYCLES_PAGES = 50

TIMEOUT_SECONDS = 30


class ShopifyAPIError(HubError):
    """The Admin API answered with errors (or not at all); the message says which."""

    def __init__(self, message: str, status: int | None = None, codes: tuple[str, ...] = (),
                 unanswered: bool = False):
        super().__init__(message)
        self.status = status  # the HTTP status when Shopify answered one (401: token refused)
        self.codes = codes    # the GraphQL errors' extensions.code (ACCESS_DENIED, THROTTLED…)
        self.unanswered = unanswered  # no answer came (unreachable, timed out)

    @property
    def transient(self) -> bool:
        """Shopify's trouble, not a refusal: no answer, a status asking to be asked again
        (408, 425, 429, 5xx), THROTTLED past the pacer's retries, or INTERNAL_SERVER_ERROR;
        the same request may succeed later."""
        return (self.unanswered or asks_again(self.status)
                or bool({"THROTTLED", "INTERNAL_SERVER_ERROR"} & set(self.codes)))


class ContractNotReadable(ShopifyAPIError):
    """A subscription contract this app may not read: another app owns it, or the app lacks
    read_own_subscription_contracts. Nothing a retry changes."""


class ShopifyUninstalled(ShopifyAPIError):
    """The app was uninstalled (app/uninstalled): the hub makes no Shopify call until reinstalled."""


class _GraphQL(shopify.GraphQL):
    """ShopifyAPI's client (endpoint and headers from the active session) with a timeout:
    its own execute() waits forever on a silent server, which would stall a worker's batch.
    It also keeps the API version Shopify served, which differs from the one asked for once
    that one is no longer supported (https://shopify.dev/docs/api/usage/versioning)."""

    served_version: str | None = None

    def execute(self, query, variables=None, operation_name=None):
        headers = self.merge_headers(
            {"Accept": "application/json", "Content-Type": "application/json"}, self.headers)
        data = json.dumps({"query": query, "variables": variables, "operationName": operation_name})
        request = Request(self.endpoint, data.encode(), headers)
        with urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            self.served_version = response.headers.get("X-Shopify-API-Version")
            return response.read().decode("utf-8")


def has_credentials(settings) -> bool:
    """A shop and either an access token or a client id and secret."""
    return bool(settings.SHOPIFY_SHOP and (settings.SHOPIFY_ACCESS_TOKEN or (
        settings.SHOPIFY_CLIENT_ID and settings.SHOPIFY_CLIENT_SECRET)))


def is_configured(settings) -> bool:
    """Whether the hub may call the Admin API: credentials, and the app not uninstalled."""
    return has_credentials(settings) and uninstalled(settings) is None


def contract_gid(contract_id) -> str:
    """The GraphQL id of a contract from its numeric id or its gid."""
    text = str(contract_id)
    return text if text.startswith("gid://") else f"gid://shopify/SubscriptionContract/{text}"


def fetch_contract(settings, contract_id, paced: "CostPacer | None" = None) -> dict:
    """The subscription contract as a plain dict (the GraphQL node); raises ShopifyAPIError.
    Paced by the app's query-cost bucket on the store (a billing run sends a burst of
    contract and attempt webhooks), waiting out THROTTLED answers, or by `paced` (a listing
    run's own)."""
    gid = contract_gid(contract_id)
    try:
        data = (paced or shared_pacer(settings)).execute(settings, "contract", CONTRACT_QUERY, {"id": gid})
    except ShopifyAPIError as exc:
        if "ACCESS_DENIED" in exc.codes:
            raise ContractNotReadable(f"subscription contract {gid}: {exc}", codes=exc.codes) from exc
        raise
    contract = data.get("subscriptionContract")
    if contract is None:
        # Null without errors: gone, or not readable with this app's scopes
        # (read_own_subscription_contracts only shows the app's own contracts).
        raise ContractNotReadable(f"subscription contract {gid} not found or not readable by this app")
    return contract


def fetch_upcoming_cycles(settings, contract_id, since: datetime, paced: "CostPacer | None" = None) -> list[dict]:
    """A contract's billing cycles from about `since` (its next billing date) for about a
    year, by index (cycleIndex, billingAttemptExpectedDate, skipped, status, edited), up to the
    first that renews: a page of 10, and the next ones (`after` the last `endCursor`, while
    `hasNextPage`, https://shopify.dev/docs/api/usage/pagination-graphql) only while every
    cycle listed is skipped or billed. The one that renews carries `editedContract` (currency
    and lines; another query) when it was edited. Raises ShopifyAPIError. Paced as
    fetch_contract is, or by `paced` (a listing run's own)."""
    cycles, after, pacer = [], None, paced or shared_pacer(settings)
    for _ in range(CYCLES_PAGES):
        data = pacer.execute(settings, "billing_cycles", CYCLES_QUERY, {
            "id": contract_gid(contract_id), "from": shopify_time(since - CYCLES_SINCE),
            "until": shopify_time(since + CYCLES_UNTIL), "after": after})
        found = data.get("subscriptionBillingCycles") or {}
        cycles += found.get("nodes") or []
        page = found.get("pageInfo") or {}
        if next_to_bill(cycles) or not page.get("hasNextPage") or not page.get("endCursor"):
            break
        after = page["endCursor"]
    upcoming = next_to_bill(cycles)
    if upcoming is not None and upcoming.get("edited"):
        data = pacer.execute(settings, "edited_cycle", EDITED_CYCLE_QUERY, {
            "id": contract_gid(contract_id), "index": upcoming["cycleIndex"]})
        upcoming["editedContract"] = (data.get("subscriptionBillingCycle") or {}).get("editedContract")
    return cycles


def next_to_bill(cycles: list[dict] | None) -> dict | None:
    """The first listed billing cycle still to bill (neither skipped nor billed): the next
    renewal. None when every one listed is skipped or billed."""
    return next((c for c in cycles or [] if not c.get("skipped") and c.get("status") != "BILLED"), None)


def upcoming_cycles(settings, contract: dict, paced: "CostPacer | None" = None) -> list[dict] | None:
    """An active contract's billing cycles from its next billing date on (a skip moves its next
    renewal, where nextBillingDate stays); None for another status or no such date, or when
    Shopify refuses the query (the renewal is then nextBillingDate). No answer raises
    ShopifyAPIError (transient), as for the contract."""
    since = utc(contract.get("nextBillingDate"))
    if contract.get("status") != "ACTIVE" or since is None:
        return None
    try:
        return fetch_upcoming_cycles(settings, contract["id"], since, paced)
    except ShopifyAPIError as exc:
        if exc.transient:
            raise
        return None


def shopify_time(moment: datetime) -> str:
    """A time as the Admin API's DateTime arguments and search syntax take it (UTC, `Z`)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def execute(settings, query: str, variables: dict | None = None, extensions: dict | None = None,
            served: dict | None = None) -> dict:
    """`data` of a GraphQL query; raises ShopifyAPIError on transport or GraphQL errors
    (ShopifyUninstalled after app/uninstalled, before anything is sent).

    `extensions`, when given, receives the answer's extensions (query cost and throttle
    status, for paced listing), also when the answer is an error such as THROTTLED.
    `served`, when given, receives {"api_version": the X-Shopify-API-Version Shopify answered}."""
    held = uninstalled(settings)
    if held is not None:
        raise ShopifyUninstalled(f"the app was uninstalled from {held.get('shop') or settings.SHOPIFY_SHOP}"
                                 f" on {held.get('at', '?')[:10]}: no Shopify call until `hub install "
                                 "--reinstalled`")
    token = access_token(settings)
    try:
        raw, version = _post_graphql(settings, token, query, variables)
    except ShopifyAPIError as exc:
        if exc.status != 401 or settings.SHOPIFY_ACCESS_TOKEN:
            raise
        # A granted token revoked or expired early: one new grant, then one more try.
        raw, version = _post_graphql(settings, access_token(settings, stale=token), query, variables)
    if served is not None:
        served["api_version"] = version
    answer = json.loads(raw)
    if extensions is not None:
        extensions.update(answer.get("extensions") or {})
    errors = answer.get("errors")
    if errors:
        errors = errors if isinstance(errors, list) else [errors]  # some answers carry one string
        codes = tuple(str((e.get("extensions") or {}).get("code")) for e in errors if isinstance(e, dict))
        raise ShopifyAPIError("; ".join(_error_message(e) for e in errors), codes=codes)
    return answer.get("data") or {}


# --- calculated query cost ---------------------------------------------------------------------

THROTTLED_RETRIES = 8


class CostPacer:
    """Admin GraphQL calls paced by the calculated query cost Shopify reports.

    Every answer's `extensions.cost` says what the query asked (`requestedQueryCost`) and what
    is left in the bucket (`throttleStatus`: maximumAvailable, currentlyAvailable, restoreRate;
    100 points/s on Standard plans, 1,000 on Plus;
    https://shopify.dev/docs/apps/build/apis/graphql-admin/rate-limits). A query waits until the
    bucket holds what its kind asked last time; a THROTTLED answer (the query was not run)
    waits for the bucket to refill and asks again, up to THROTTLED_RETRIES times."""

    def __init__(self, pacer: Pacer | None = None):
        # Until the first answer says otherwise: the Standard plan's bucket.
        self.pacer = pacer or Pacer(100.0, burst=2000.0)
        self.requested: dict[str, float] = {}

    def execute(self, settings, kind: str, query: str, variables: dict | None = None) -> dict:
        """`data` of the query (as `execute`), `kind` naming its usual cost."""
        for attempt in range(THROTTLED_RETRIES + 1):
            self.pacer.take(min(self.requested.get(kind, 0.0), self.pacer.burst))
            extensions: dict = {}
            try:
                data = execute(settings, query, variables, extensions=extensions)
            except ShopifyAPIError as exc:
                self._account(kind, extensions)
                if "THROTTLED" not in exc.codes or attempt == THROTTLED_RETRIES:
                    raise
                if not (extensions.get("cost") or {}).get("throttleStatus"):
                    self.pacer.hold(1.0)  # no bucket state to wait by: a second restores ~100 points
                continue  # the bucket was synced from the answer: take() waits for it
            self._account(kind, extensions)
            return data
        raise AssertionError("unreachable")

    def _account(self, kind: str, extensions: dict) -> None:
        cost = extensions.get("cost") or {}
        status = cost.get("throttleStatus") or {}
        if cost.get("requestedQueryCost") is not None:
            self.requested[kind] = float(cost["requestedQueryCost"])
        if status.get("currentlyAvailable") is not None:
            self.pacer.sync(status["currentlyAvailable"], status.get("restoreRate"),
                            status.get("maximumAvailable"))


_pacers: dict[tuple[str, str], CostPacer] = {}
_pacers_lock = threading.Lock()


def shared_pacer(settings) -> CostPacer:
    """The process's CostPacer for the store: the app has one bucket there, which every
    worker call (contract fetches, inventory lookups, billing attempts) draws on."""
    key = (settings.SHOPIFY_SHOP or "", settings.SHOPIFY_ADMIN_URL or "")
    with _pacers_lock:
        return _pacers.setdefault(key, CostPacer())


def _post_graphql(settings, token: str, query: str, variables: dict | None) -> tuple[str, str | None]:
    """The answer's body and the API version Shopify served it in."""
    session = shopify.Session(settings.SHOPIFY_SHOP, settings.SHOPIFY_API_VERSION, token)
    shopify.ShopifyResource.activate_session(session)
    try:
        if settings.SHOPIFY_ADMIN_URL:
            # Session always builds https://<shop>.myshopify.com/admin/api/<version> and GraphQL()
            # posts to ShopifyResource.site + "/graphql.json": keep the path, swap the host.
            base = settings.SHOPIFY_ADMIN_URL.rstrip("/")
            shopify.ShopifyResource.site = base + urlparse(session.site).path
        client = _GraphQL()
        return client.execute(query, variables), client.served_version
    except HTTPError as exc:
        with exc:  # Shopify's own words (bad token, missing scope) belong in the sync log
            detail = exc.read().decode("utf-8", "replace")[:300]
        raise ShopifyAPIError(f"Shopify Admin API answered HTTP {exc.code}: {detail}", exc.code) from exc
    except (URLError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ShopifyAPIError(f"Shopify Admin API unreachable: {reason}", unanswered=True) from exc
    finally:
        shopify.ShopifyResource.clear_session()


# --- access token ---------------------------------------------------------------------------

# Renew a granted token this long before Shopify's expiry, so no call goes out with a token
# about to lapse (a contract fetch may sit in a worker's batch for a while).
RENEW_BEFORE_SECONDS = 300
_clock = time.monotonic  # tests move it forward instead of sleeping


@dataclass
class GrantedToken:
    value: str
    expires_at: float  # on _clock
    scope: str


_TOKENS: dict[tuple, GrantedToken] = {}
_TOKENS_LOCK = threading.Lock()  # one grant at a time per process: callers share its token


def admin_base(settings) -> str:
    """https://{shop}, or the stand-in's base URL."""
    return (settings.SHOPIFY_ADMIN_URL or f"https://{settings.SHOPIFY_SHOP}").rstrip("/")


def access_token(settings, stale: str | None = None) -> str:
    """SHOPIFY_ACCESS_TOKEN, else a cached client-credentials token (granted or renewed when
    missing, near expiry, or equal to `stale`, the one Shopify just refused)."""
    if settings.SHOPIFY_ACCESS_TOKEN:
        return settings.SHOPIFY_ACCESS_TOKEN
    if not (settings.SHOPIFY_CLIENT_ID and settings.SHOPIFY_CLIENT_SECRET):
        raise ShopifyAPIError("no Shopify credentials: set SHOPIFY_ACCESS_TOKEN, or SHOPIFY_CLIENT_ID "
                              "and SHOPIFY_CLIENT_SECRET of the Dev Dashboard app")
    key = (admin_base(settings), settings.SHOPIFY_CLIENT_ID, settings.SHOPIFY_CLIENT_SECRET)
    with _TOKENS_LOCK:
        held = _TOKENS.get(key)
        if held is not None and held.value != stale and _clock() < held.expires_at - RENEW_BEFORE_SECONDS:
            return held.value
        _TOKENS[key] = granted = grant_token(settings)
        return granted.value


def cached_token(settings) -> GrantedToken | None:
    """The granted token this process holds for these credentials, if any."""
    key = (admin_base(settings), settings.SHOPIFY_CLIENT_ID, settings.SHOPIFY_CLIENT_SECRET)
    return _TOKENS.get(key)


def grant_token(settings) -> GrantedToken:
    """POST /admin/oauth/access_token with grant_type=client_credentials (Dev Dashboard apps)."""
    form = urlencode({"grant_type": "client_credentials", "client_id": settings.SHOPIFY_CLIENT_ID,
                      "client_secret": settings.SHOPIFY_CLIENT_SECRET}).encode()
    request = Request(admin_base(settings) + "/admin/oauth/access_token", form,
                      {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"})
    started = _clock()
    try:
        with urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            body = json.loads(response.read() or b"{}")
    except HTTPError as exc:
        with exc:
            detail = exc.read().decode("utf-8", "replace")[:300]
        raise ShopifyAPIError(f"Shopify refused the client-credentials grant (HTTP {exc.code}): {detail}",
                              exc.code) from exc
    except (URLError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ShopifyAPIError(f"Shopify token endpoint unreachable: {reason}") from exc
    except ValueError as exc:
        raise ShopifyAPIError(f"Shopify's token answer is not JSON: {exc}") from exc
    if not body.get("access_token"):
        raise ShopifyAPIError(f"Shopify's token answer has no access_token: {sorted(body)}")
    # expires_in counts from Shopify's answer; measuring from before the request errs early.
    lifetime = float(body["expires_in"]) if body.get("expires_in") is not None else 86399.0
    return GrantedToken(body["access_token"], started + lifetime, body.get("scope", ""))


# --- app/uninstalled ------------------------------------------------------------------------

_FLAG_ENGINES: dict[str, object] = {}


def uninstalled(settings) -> dict | None:
    """What app/uninstalled recorded ({"shop", "at"}) while the app stays uninstalled, else None.

    Read from the hub's database on its own connection: callers (the worker's enrichment,
    `hub install`, backfill) hold settings, not a session."""
    url = settings.DATABASE_URL
    if url.startswith("sqlite") and not _sqlite_file_exists(url):
        return None  # no database yet: nothing was ever recorded
    engine = _FLAG_ENGINES.get(url)
    if engine is None:
        engine = _FLAG_ENGINES[url] = _flag_engine(url)
    try:
        with engine.connect() as conn:
            value = conn.execute(select(Checkpoint.value).where(Checkpoint.name == UNINSTALLED)).scalar()
    except SQLAlchemyError:
        return None  # a database not migrated yet holds no flag
    return None if value is None else (value or {})


def _sqlite_file_exists(url: str) -> bool:
    path = url.split("///", 1)[-1]
    return bool(path) and path != ":memory:" and Path(path).exists()


def _flag_engine(url: str):
    if url.startswith("sqlite"):
        # A read on its own connection: WAL lets it run beside the worker's open write, and
        # opening a SQLite file is cheap enough that no connection is kept.
        return create_engine(url, poolclass=NullPool, connect_args={"timeout": 30})
    return create_engine(url, pool_size=1, max_overflow=4, pool_pre_ping=True)


def _error_message(error) -> str:
    if not isinstance(error, dict):
        return str(error)
    code = (error.get("extensions") or {}).get("code")
    return f"{error.get('message', 'unknown error')}" + (f" ({code})" if code else "")


# --- webhook subscriptions (`hub install`) --------------------------------------------------

# Shopify sends these to the URLs set on the app (Dev Dashboard → app version → compliance
# webhooks), never to subscriptions made through the API: `hub install` names them instead.
COMPLIANCE_TOPICS = ("customers/data_request", "customers/redact", "shop/redact")

SUBSCRIPTIONS_QUERY = """
query HubWebhookSubscriptions($after: String) {
  webhookSubscriptions(first: 100, after: $after) {
    nodes { id topic uri }
    pageInfo { hasNextPage endCursor }
  }
}
"""

CREATE_SUBSCRIPTION = """
mutation HubWebhookSubscriptionCreate($topic: WebhookSubscriptionTopic!, $uri: String!) {
  webhookSubscriptionCreate(topic: $topic, webhookSubscription: {uri: $uri, format: JSON}) {
    webhookSubscription { id topic uri }
    userErrors { field message }
  }
}
"""

UPDATE_SUBSCRIPTION = """
mutation HubWebhookSubscriptionUpdate($id: ID!, $uri: String!) {
  webhookSubscriptionUpdate(id: $id, webhookSubscription: {uri: $uri}) {
    webhookSubscription { id topic uri }
    userErrors { field message }
  }
}
"""


def topic_enum(topic: str) -> str:
    """WebhookSubscriptionTopic of a webhook topic: "orders/paid" → "ORDERS_PAID"."""
    return topic.replace("/", "_").upper()


def subscriptions(settings, served: dict | None = None) -> list[dict]:
    """Every webhook subscription this app made on the shop ({id, topic, uri}), all pages
    (`served` as in execute)."""
    found, after = [], None
    while True:
        page = execute(settings, SUBSCRIPTIONS_QUERY, {"after": after}, served=served)["webhookSubscriptions"]
        found.extend(page["nodes"])
        if not page["pageInfo"]["hasNextPage"]:
            return found
        after = page["pageInfo"]["endCursor"]


@dataclass
class SubscriptionPlan:
    """What registration must do: topics to create, (id, topic) to point at our URI, and
    topics already right."""

    create: list[str]
    update: list[tuple[str, str]]
    ok: list[str]


def plan_subscriptions(existing: list[dict], topics, uri: str) -> SubscriptionPlan:
    """Compare the shop's subscriptions with the topics the hub handles (pure)."""
    plan = SubscriptionPlan([], [], [])
    for topic in topics:
        mine = [s for s in existing if s.get("topic") == topic_enum(topic)]
        if any(s.get("uri") == uri for s in mine):
            plan.ok.append(topic)
        elif mine:  # ours, pointing at an old address of the hub
            plan.update.append((mine[0]["id"], topic))
        else:  # never made, or deleted by Shopify after failed deliveries
            plan.create.append(topic)
    return plan


def create_subscription(settings, topic: str, uri: str) -> dict:
    """webhookSubscriptionCreate; the new subscription, or ShopifyAPIError with Shopify's words."""
    data = execute(settings, CREATE_SUBSCRIPTION, {"topic": topic_enum(topic), "uri": uri})
    return _mutated(data["webhookSubscriptionCreate"], topic)


def update_subscription(settings, subscription_id: str, topic: str, uri: str) -> dict:
    """webhookSubscriptionUpdate to a new URI."""
    data = execute(settings, UPDATE_SUBSCRIPTION, {"id": subscription_id, "uri": uri})
    return _mutated(data["webhookSubscriptionUpdate"], topic)


def _mutated(payload: dict, topic: str) -> dict:
    errors = payload.get("userErrors") or []
    if errors:
        raise ShopifyAPIError(f"{topic}: " + "; ".join(e.get("message", "?") for e in errors))
    return payload["webhookSubscription"]
