"""A loopback stand-in of Shopify's Admin GraphQL endpoint (`/admin/api/<version>/graphql.json`).

It answers the subscription contract query in the shape of the Admin API (SubscriptionContract
fields as documented on shopify.dev), checks the access token like Shopify does (401), serves
API versions as Shopify does (below), and records every request so tests can look at what the
hub sent.

    with FakeShopifyAdmin(token="shpat_test") as admin:
        settings.SHOPIFY_ADMIN_URL = admin.url
        ...
        admin.requests[0]["variables"]
"""
from __future__ import annotations

import json
import re
import threading
import time
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

_PATH = re.compile(r"^/admin/api/(?P<version>[^/]+)/graphql\.json$")
_LISTING = re.compile(r"\b(?P<connection>customers|subscriptionContracts|orders)\(first:")
_UPDATED_AFTER = re.compile(r"updated_at:>'(?P<at>[^']+)'")
# Query cost of one node of the hub's listing queries (object 1, nested connections 2 + first × node).
_NODE_COST = {"customers": 3, "subscriptionContracts": 25, "orders": 81}  # orders: + 5 refunds × 3
# What Shopify answers when a query fails on its side (HTTP 200 with top-level errors), as
# recorded in https://community.shopify.com/c/shopify-apis-and-sdks/760-internal-errors-when-calling-shopify-graphql-api/m-p/1130424:
# tests and the demo set `errors` to it for an Admin API that fails in a way no wait mends.
_REQUEST_ID = "3221c58f-3446-4843-a452-a517787121c6"
INTERNAL_ERROR = [{"message": "Internal error. Looks like something went wrong on our end.\nRequest ID: "
                              f"{_REQUEST_ID} (include this in support requests).",
                   "extensions": {"code": "INTERNAL_SERVER_ERROR", "requestId": _REQUEST_ID}}]
# The hub's single contract query asks 1 + 1 + 1 + (2 + 50 × 2) + 1 (webhooks/shopify/api.py).
CONTRACT_REQUESTED = 106


def contract_node(gid: str, **overrides) -> dict:
    """A SubscriptionContract as the Admin API returns it for the hub's query."""
    node = {
        "id": gid,
        "status": "ACTIVE",
        "updatedAt": "2026-11-01T11:58:00Z",
        "nextBillingDate": "2026-11-29T12:00:00Z",
        "currencyCode": "CAD",
        "customer": {"id": "gid://shopify/Customer/1", "email": "Bob@Biller.com", "firstName": "Bob",
                     "lastName": "Biller", "phone": "+16135550135"},
        "billingPolicy": {"interval": "WEEK", "intervalCount": 4},
        "lines": {"nodes": [{
            "productId": "gid://shopify/Product/788032119674292922",
            "variantId": "gid://shopify/ProductVariant/642667041472713922",
            "title": "Example T-Shirt",
            "quantity": 2,
            "currentPrice": {"amount": "24.99", "currencyCode": "CAD"},
            "sellingPlanId": "gid://shopify/SellingPlan/1039518925",
            "sellingPlanName": "Delivered every 4 weeks",
        }]},
        "customerPaymentMethod": {"id": "gid://shopify/CustomerPaymentMethod/0eccccc666aac73efcd31094ddc4ebf0"},
    }
    node.update(overrides)
    return node


def _iso_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _step(moment: datetime, interval: str, count: int) -> datetime:
    """`moment` moved by `count` billing intervals (DAY, WEEK, MONTH, YEAR; negative goes back)."""
    if interval in ("DAY", "WEEK"):
        return moment + timedelta(days=count * (7 if interval == "WEEK" else 1))
    months = count * (12 if interval == "YEAR" else 1)
    year, month = divmod(moment.year * 12 + moment.month - 1 + months, 12)
    return moment.replace(year=year, month=month + 1, day=min(moment.day, _month_days(year, month + 1)))


def _month_days(year: int, month: int) -> int:
    return (date(year + month // 12, month % 12 + 1, 1) - date(year, month, 1)).days


# --- API versions ------------------------------------------------------------------------------
# https://shopify.dev/docs/api/usage/versioning: a stable version is released at the start of
# each quarter (YYYY-01/04/07/10) and supported for at least 12 months (each version's release
# notes name the exact end, e.g. 2026-10 "accessible until October 16, 2027 15:00 UTC",
# https://shopify.dev/changelog/release-notes/2026-10; the stand-in keeps the documented
# minimum, so it drops a version no later than Shopify does); a request to a stable
# version no longer supported is served as the oldest supported one ("falls forward"). The
# next quarter's version is the release candidate, and `unstable` is always there.
# https://shopify.dev/tutorials/update-your-app-to-a-new-api-version ("Log for API response
# headers"): every answer names the version that executed it in X-Shopify-API-Version.
_STABLE = re.compile(r"^(?P<year>\d{4})-(?P<month>01|04|07|10)$")


def _quarter(year: int, month: int, step: int) -> str:
    index = year * 4 + (month - 1) // 3 + step
    return f"{index // 4:04d}-{(index % 4) * 3 + 1:02d}"


def supported_versions(today: date) -> list[str]:
    """The stable versions Shopify supports on `today`, oldest first: the four released in
    the past 12 months (each is supported until the same day a year after its release)."""
    newest = _quarter(today.year, today.month, 0)
    return [_quarter(int(newest[:4]), int(newest[5:]), step) for step in (-3, -2, -1, 0)]


def served_version(requested: str, today: date) -> str | None:
    """The version Shopify answers a request for `requested` with; None for a name that is no
    version at all (not documented; answered 404 here, so a typo in the setting is loud)."""
    supported = supported_versions(today)
    candidate = _quarter(int(supported[-1][:4]), int(supported[-1][5:]), 1)
    if requested in (*supported, candidate, "unstable"):
        return requested
    if _STABLE.match(requested) and requested < supported[0]:
        return supported[0]
    return None


# --- contracts belong to the app that made them; scopes -----------------------------------------
# SubscriptionContract "Requires the read_own_subscription_contracts or
# write_own_subscription_contracts scope", and "own" means what it says: an app sees and bills
# only the contracts it created (https://shopify.dev/docs/api/admin-graphql/latest/objects/SubscriptionContract,
# https://shopify.dev/docs/api/usage/access-scopes). The scopes are protected: Shopify approves
# them per app ("Public and custom apps need to request access to the appropriate protected
# scopes", https://shopify.dev/apps/subscriptions/contracts). A
# query for a field the token's scopes do not cover answers HTTP 200 with an ACCESS_DENIED
# GraphQL error (as reported in https://community.shopify.com/c/Shopify-Discussion/Unable-to-access-the-SubscriptionContract/m-p/1042022);
# another app's contract is answered as one that does not exist (null).
HUB_APP = "the hub"
OTHER_APP = "Shopify Subscriptions"  # who owns a normal store's contracts
DEFAULT_SCOPES = frozenset({"read_customers", "read_orders", "read_products", "read_inventory"})
CONTRACT_SCOPES = frozenset({"read_own_subscription_contracts", "write_own_subscription_contracts"})
# Webhook topics on contracts and billing attempts need the scope too
# (https://shopify.dev/docs/api/webhooks?reference=toml, each topic names its scope).
_CONTRACT_TOPIC = re.compile(r"^SUBSCRIPTION_(CONTRACTS|BILLING_ATTEMPTS|BILLING_CYCLES|BILLING_CYCLE_EDITS)_")


def access_denied(field: str, scope: str = "read_own_subscription_contracts") -> dict:
    """The GraphQL error Shopify answers for a field the token's scopes do not cover."""
    return {"message": f"Access denied for {field} field. Required access: `{scope}` access scope.",
            "path": [field], "extensions": {"code": "ACCESS_DENIED",
                                            "documentation": "https://shopify.dev/api/usage/access-scopes",
                                            "requiredAccess": f"`{scope}` access scope."}}


class ContractOwnership:
    """Which app owns each contract and which scopes the hub's token holds, mixed into
    FakeShopifyAdmin. By default the store is a normal one: its subscription app owns every
    contract and the hub holds no contract scope. `own_contracts()` makes the hub that app."""

    def _init_ownership(self) -> None:
        self.scopes: set[str] = set(DEFAULT_SCOPES)
        self.owners: dict[str, str] = {}  # contract gid → owning app, for the exceptions
        self.contract_owner = OTHER_APP   # owner of every other contract

    def own_contracts(self) -> "ContractOwnership":
        """The hub's own app made the contracts, and Shopify approved its contract scopes."""
        self.contract_owner = HUB_APP
        self.scopes |= CONTRACT_SCOPES
        return self

    def owned(self, gid: str) -> bool:
        return self.owners.get(gid, self.contract_owner) == HUB_APP

    def can_read_contracts(self) -> bool:
        return bool(self.scopes & CONTRACT_SCOPES)  # a write scope grants read too


# --- `hub install`: the client-credentials grant and webhook subscriptions --------------------

TOKEN_PATH = "/admin/oauth/access_token"
_FIRST = re.compile(r"webhookSubscriptions\(first:\s*(\d+)")
_CYCLES_FIRST = re.compile(r"subscriptionBillingCycles\([^)]*?\bfirst:\s*(\d+|\$first)")


class AdminInstallStandIn:
    """The Admin API's part that `hub install` talks to, mixed into FakeShopifyAdmin.

    - `client_id`/`client_secret`: what the client-credentials grant accepts; granted tokens
      last `token_lifetime` seconds (Shopify: 86399) and `expire_tokens()` ends them early.
    - `subscriptions`: id → {"id", "topic", "uri"}, as webhookSubscriptions lists them;
      `drop_subscription(topic)` does what Shopify does after 8 failed deliveries.
    - `page_size`: nodes per webhookSubscriptions page (default: the query's `first`).
    """

    def _init_install(self) -> None:
        self.client_id, self.client_secret = "client-test", "secret-test"
        self.token_lifetime = 86399
        self.granted: dict[str, float] = {}  # token → expiry on time.monotonic()
        self.grants = 0
        self.subscriptions: dict[str, dict] = {}
        self.page_size: int | None = None

    def accepts(self, token: str | None) -> bool:
        if token and token == self.token:
            return True
        expiry = self.granted.get(token or "")
        return expiry is not None and time.monotonic() < expiry

    def expire_tokens(self) -> None:
        self.granted = dict.fromkeys(self.granted, 0.0)

    def drop_subscription(self, topic_enum: str) -> None:
        for sid in [k for k, v in self.subscriptions.items() if v["topic"] == topic_enum]:
            del self.subscriptions[sid]

    def grant(self, form: dict) -> tuple[int, dict]:
        self.requests.append({"path": TOKEN_PATH, "version": None, "headers": {}, "query": "",
                              "variables": {k: v for k, v in form.items() if k != "client_secret"}})
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        if (form.get("client_id"), form.get("client_secret")) != (self.client_id, self.client_secret):
            # RFC 6749 §5.2: a client that fails authentication gets invalid_client.
            return 401, {"error": "invalid_client", "error_description": "Client authentication failed"}
        self.grants += 1
        token = f"shpat_granted_{self.grants}"
        self.granted[token] = time.monotonic() + self.token_lifetime
        return 200, {"access_token": token, "scope": ",".join(sorted(self.scopes)),
                     "expires_in": self.token_lifetime}

    def webhooks_answer(self, body: dict) -> tuple[int, dict]:
        query, variables = body.get("query", ""), body.get("variables") or {}
        if "webhookSubscriptionCreate(" in query:
            return 200, {"data": {"webhookSubscriptionCreate": self._create(variables)}}
        if "webhookSubscriptionUpdate(" in query:
            return 200, {"data": {"webhookSubscriptionUpdate": self._update(variables)}}
        nodes = sorted(self.subscriptions.values(), key=lambda n: int(n["id"].rsplit("/", 1)[-1]))
        start = int(variables.get("after") or 0)
        first = self.page_size or int((_FIRST.search(query) or [0, 50])[1])
        page = nodes[start:start + first]
        more = start + first < len(nodes)
        return 200, {"data": {"webhookSubscriptions": {
            "nodes": [dict(n) for n in page],
            "pageInfo": {"hasNextPage": more, "endCursor": str(start + first) if page else None}}}}

    def _bad_uri(self, uri: str) -> list[dict]:
        if not uri.startswith("https://"):
            return [{"field": ["webhookSubscription", "uri"], "message": "Address protocol is not supported"}]
        return []

    def _create(self, variables: dict) -> dict:
        topic, uri = variables.get("topic", ""), variables.get("uri", "")
        errors = self._bad_uri(uri)
        if _CONTRACT_TOPIC.match(topic) and not self.can_read_contracts():
            errors.append({"field": ["topic"], "message": f"Access denied for {topic} topic. Required access: "
                                                          "`read_own_subscription_contracts` access scope."})
        if any(n["topic"] == topic and n["uri"] == uri for n in self.subscriptions.values()):
            errors.append({"field": ["webhookSubscription", "uri"],
                           "message": "Address for this topic has already been taken"})
        if errors:
            return {"webhookSubscription": None, "userErrors": errors}
        self._next_id = getattr(self, "_next_id", 0) + 1
        node = {"id": f"gid://shopify/WebhookSubscription/{self._next_id}", "topic": topic, "uri": uri}
        self.subscriptions[node["id"]] = node
        return {"webhookSubscription": dict(node), "userErrors": []}

    def _update(self, variables: dict) -> dict:
        node = self.subscriptions.get(variables.get("id", ""))
        errors = self._bad_uri(variables.get("uri", ""))
        if node is None:
            errors.append({"field": ["id"], "message": "Webhook subscription does not exist"})
        if errors:
            return {"webhookSubscription": None, "userErrors": errors}
        node["uri"] = variables["uri"]
        return {"webhookSubscription": dict(node), "userErrors": []}


class FakeShopifyAdmin(AdminInstallStandIn, ContractOwnership):
    """Run with `with FakeShopifyAdmin() as admin:`; `admin.url` is the base to use as SHOPIFY_ADMIN_URL.

    - `owns_contracts`: the hub's app made the store's contracts and holds the contract scopes
      (else another app owns them and the hub can read none: ContractOwnership).
    - `contracts`: gid → node the store holds (`hold()` adds `contract_node(gid)`); any other
      id answers `subscriptionContract: null`, as Shopify answers a query by an id the shop
      does not hold (https://shopify.dev/docs/api/admin-graphql/latest/queries/subscriptionContract).
    - `inventory_items`: gid → InventoryItem node (`variant { id product { id } }`); others answer null.
    - `skipped`: contract gid → indexes of its billing cycles skipped (`skip()`); `billed` the same
      for cycles already billed; `moved` the billing dates `move()` gave some, `edited_lines`
      the lines `edit_lines()` gave some (`subscriptionBillingCycle` answers them). A contract's
      cycles are computed from its nextBillingDate (cycle `first_cycle`, 1 by default) and
      billing policy, as `subscriptionBillingCycles` lists them.
    - `errors`: when set, every answer is `{"errors": errors}` with HTTP 200, as GraphQL errors are.
    - `requests`: one dict per request (path, version, served, headers, query, variables);
      `version` is the one asked for, `served` the one answered (X-Shopify-API-Version).
    - `today`: the date that decides which API versions are supported (default: today).
    """

    def __init__(self, token: str = "shpat_test", today: date | None = None, owns_contracts: bool = False):
        self.token = token
        self.today = today
        self.contracts: dict[str, dict | None] = {}
        self.inventory_items: dict[str, dict] = {}
        self.skipped: dict[str, set[int]] = {}
        self.billed: dict[str, set[int]] = {}
        self.first_cycle: dict[str, int] = {}
        self.moved: dict[str, dict[int, str]] = {}  # gid → cycle index → its edited billing date
        self.edited_lines: dict[str, dict[int, list[dict]]] = {}  # gid → cycle index → its edited lines
        self.errors: list[dict] | None = None
        self.requests: list[dict] = []
        self._init_ownership()
        if owns_contracts:
            self.own_contracts()
        self._init_install()  # webhook subscriptions and the token grant (`hub install` section)
        self._init_listing()  # customers, contracts, orders connections (`hub backfill` section)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def hold(self, *gids: str, **overrides) -> "FakeShopifyAdmin":
        """The store holds these contracts, each as `contract_node(gid, **overrides)` answers it."""
        for gid in gids:
            self.contracts[gid] = contract_node(gid, **overrides)
        return self

    def skip(self, gid: str, index: int, skipped: bool = True) -> dict:
        """Skip (or unskip) a contract's billing cycle, as subscriptionBillingCycleSkip does; the
        body of the subscription_billing_cycles/skip (or /unskip) webhook Shopify then sends.
        The contract's nextBillingDate stays as it is: "This field is managed by the apps"
        (https://shopify.dev/docs/api/admin-graphql/latest/objects/SubscriptionContract)."""
        held = self.skipped.setdefault(gid, set())
        if skipped:
            held.add(index)
        else:
            held.discard(index)
        return self._cycle_webhook(gid, index)

    def move(self, gid: str, index: int, billing_date: str) -> dict:
        """Give one billing cycle another billing date, as subscriptionBillingCycleScheduleEdit
        does; the body of the subscription_billing_cycle_edits/create webhook Shopify then sends
        ("Occurs whenever a subscription contract billing cycle is edited")."""
        self.moved.setdefault(gid, {})[index] = billing_date
        return self._cycle_webhook(gid, index)

    def edit_lines(self, gid: str, index: int, lines: list[dict] | None) -> dict:
        """Give one billing cycle other lines (another product, quantity or price) for that cycle
        alone, as committing a billing cycle contract draft does
        (https://shopify.dev/docs/apps/build/purchase-options/subscriptions/billing-cycles/manage-billing-cycle-contracts),
        or take its edit back (`lines` None, as subscriptionBillingCycleEditDelete does); the body
        of the subscription_billing_cycle_edits/create (or /delete) webhook Shopify then sends."""
        if lines is None:
            self.edited_lines.get(gid, {}).pop(index, None)
        else:
            self.edited_lines.setdefault(gid, {})[index] = lines
        return self._cycle_webhook(gid, index)

    def _cycle_webhook(self, gid: str, index: int) -> dict:
        cycle = self.cycle(gid, index)
        return {"subscription_contract_id": int(gid.rsplit("/", 1)[1]), "cycle_index": index,
                "cycle_start_at": cycle["cycleStartAt"], "cycle_end_at": cycle["cycleEndAt"],
                "billing_attempt_expected_date": cycle["billingAttemptExpectedDate"],
                "skipped": cycle["skipped"], "edited": cycle["edited"], "contract_edit": None}

    def cycle(self, gid: str, index: int) -> dict:
        """One SubscriptionBillingCycle of a held contract (the index doesn't reset: "the first
        billing cycle for a new subscription contract has an index of 1",
        https://shopify.dev/docs/apps/build/purchase-options/subscriptions/billing-cycles)."""
        contract = self._contract(gid)
        policy = contract["billingPolicy"]
        step = index - self.first_cycle.get(gid, 1)
        start = _step(_iso_time(contract["nextBillingDate"]), policy["interval"], policy["intervalCount"] * step)
        end = _step(start, policy["interval"], policy["intervalCount"])
        moved = self.moved.get(gid, {}).get(index)
        edited = index in self.edited_lines.get(gid, {})
        return {"cycleIndex": index, "cycleStartAt": _iso(start), "cycleEndAt": _iso(end),
                "billingAttemptExpectedDate": moved or _iso(start), "skipped": index in self.skipped.get(gid, set()),
                "status": "BILLED" if index in self.billed.get(gid, set()) else "UNBILLED",
                "edited": bool(moved) or edited}

    def cycle_index_at(self, gid: str, moment: datetime) -> int | None:
        """The index of the held contract's billing cycle that `moment` falls in (a
        SubscriptionBillingCycleSelector by date: "Returns a billing cycle by date")."""
        index = self.first_cycle.get(gid, 1)
        for _ in range(2000):  # cycles are consecutive: walk from the next one towards `moment`
            cycle = self.cycle(gid, index)
            start, end = _iso_time(cycle["cycleStartAt"]), _iso_time(cycle["cycleEndAt"])
            if start <= moment < end:
                return index
            index += 1 if moment >= end else -1
        return None

    def cycle_answer(self, variables: dict) -> tuple[int, dict]:
        """subscriptionBillingCycle(billingCycleInput: {contractId, selector: {index}}): one cycle,
        with `editedContract` (its currency and lines) when its lines were edited; null
        otherwise (a cycle only moved to another date keeps the contract's lines)
        (https://shopify.dev/docs/api/admin-graphql/latest/queries/subscriptionBillingCycle)."""
        gid, index = variables.get("id", ""), int(variables.get("index") or 0)
        if not self.can_read_contracts():
            return 200, {"errors": [access_denied("subscriptionBillingCycle")],
                         "data": {"subscriptionBillingCycle": None}}
        contract = self._contract(gid)
        if contract is None or not self.owned(gid):
            return 200, {"errors": [{"message": "Subscription contract does not exist", "path": [
                "subscriptionBillingCycle"], "extensions": {"code": "NOT_FOUND"}}], "data": None}
        lines = self.edited_lines.get(gid, {}).get(index)
        edited = None if lines is None else {"currencyCode": contract["currencyCode"], "lines": {"nodes": lines}}
        # The cycle, its edited contract (1 each) and `lines(first: 50)` asked (2 + 50 × line and price).
        return self._costed(2 + 2 + 50 * 2, 2 + 2 * len(lines or []),
                            {"subscriptionBillingCycle": {**self.cycle(gid, index), "editedContract": edited}})

    def _contract(self, gid: str) -> dict | None:
        """A contract the store holds: queried by id (`contracts`) or listed (`listed`)."""
        return self.contracts.get(gid) or next(
            (n for n in self.listed.get("subscriptionContracts", []) if n.get("id") == gid), None)

    def cycles_answer(self, query: str, variables: dict) -> tuple[int, dict]:
        """subscriptionBillingCycles(contractId:, first:, after:, billingCyclesDateRangeSelector:):
        the cycles whose billing attempt is expected in the range, by index, a page of `first`
        at a time (at most 250, as every Admin API connection), the next page after the last
        one's `endCursor` while `pageInfo.hasNextPage`
        (https://shopify.dev/docs/api/admin-graphql/latest/queries/subscriptionBillingCycles,
        https://shopify.dev/docs/api/usage/pagination-graphql)."""
        gid = variables.get("id", "")
        if not self.can_read_contracts():
            return 200, {"errors": [access_denied("subscriptionBillingCycles")],
                         "data": {"subscriptionBillingCycles": None}}
        if self._contract(gid) is None or not self.owned(gid):
            return 200, {"errors": [{"message": "Subscription contract does not exist", "path": [
                "subscriptionBillingCycles"], "extensions": {"code": "NOT_FOUND"}}], "data": None}
        asked = _CYCLES_FIRST.search(query)
        first = int(variables["first"] if asked and asked[1] == "$first" else asked[1] if asked else 0)
        if not 0 < first <= 250:
            return 200, {"errors": [{"message": "you must provide one of first or last, at most 250",
                                     "extensions": {"code": "BAD_REQUEST"}}], "data": None}
        since, until = _iso_time(variables["from"]), _iso_time(variables["until"])
        index = int(variables["after"]) if variables.get("after") else self.first_cycle.get(gid, 1)
        nodes, more = [], False
        while True:
            cycle = self.cycle(gid, index)
            expected = _iso_time(cycle["billingAttemptExpectedDate"])
            if expected > until:
                break
            if expected >= since:
                if len(nodes) == first:
                    more = True
                    break
                nodes.append(cycle)
            index += 1
        found = {"nodes": nodes}
        if "pageInfo" in query:
            # The cursor is opaque to the hub; here it is the index the next page starts at.
            found["pageInfo"] = {"hasNextPage": more, "endCursor": str(nodes[-1]["cycleIndex"] + 1) if nodes else None}
        return self._costed(2 + first, 2 + len(nodes), {"subscriptionBillingCycles": found})

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "FakeShopifyAdmin":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def answer(self, path: str, headers: dict, body: dict) -> tuple[int, dict]:
        """HTTP status and JSON body for one request (the handler's logic, callable directly)."""
        if path == TOKEN_PATH:
            return self.grant(body)
        served = self.version_served(path)
        if served is None:
            return 404, {"errors": "Not Found"}
        self.requests.append({"path": path, "version": _PATH.match(path)["version"], "served": served,
                              "headers": headers, "query": body.get("query", ""),
                              "variables": body.get("variables") or {}})
        if not self.accepts(headers.get("x-shopify-access-token")):
            return 401, {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}
        if self.errors:
            return 200, {"errors": self.errors}
        if "webhookSubscription" in body.get("query", ""):
            return self.webhooks_answer(body)
        if _LISTING.search(body.get("query", "")):
            return self.listing_answer(body)
        if "shop {" in body.get("query", "") and "subscriptionContract(" not in body.get("query", ""):
            return 200, {"data": {"shop": {"name": "Stand-in shop"}}}  # `hub install --check`
        if "inventoryItem(" in body.get("query", ""):
            # An id the shop does not hold answers null, as a query by id does
            # (https://shopify.dev/docs/api/admin-graphql/latest/queries/inventoryItem).
            gid = (body.get("variables") or {}).get("id", "")
            item = self.inventory_items.get(gid)
            return self._costed(3, 3 if item else 1, {"inventoryItem": item})  # item, variant, product
        if "subscriptionBillingCycle(" in body.get("query", ""):
            return self.cycle_answer(body.get("variables") or {})
        if "subscriptionBillingCycles(" in body.get("query", ""):
            return self.cycles_answer(body.get("query", ""), body.get("variables") or {})
        if "subscriptionContract(" not in body.get("query", ""):
            return 200, {"errors": [{"message": "the stand-in only answers subscriptionContract"}]}
        if not self.can_read_contracts():
            return 200, {"errors": [access_denied("subscriptionContract")], "data": {"subscriptionContract": None}}
        gid = (body.get("variables") or {}).get("id", "")
        node = self.contracts.get(gid)
        if not self.owned(gid):
            node = None
        lines = len(((node or {}).get("lines") or {}).get("nodes") or [])
        # The hub's contract query: the contract, its customer, billing policy and payment
        # method (1 each) and `lines(first: 50)` (2 + 50 × line and its price) asked; the
        # lines there are, paid.
        return self._costed(CONTRACT_REQUESTED, 6 + 2 * lines if node else 1,
                            {"subscriptionContract": node})

    def version_served(self, path: str) -> str | None:
        """The API version a GraphQL path is answered in (None: not an Admin API path)."""
        match = _PATH.match(path)
        return served_version(match["version"], self.today or date.today()) if match else None

    # --- listings (`hub backfill`, reconciliation) ------------------------------------------
    # Connections paged with opaque cursors, filtered by `updated_at:>'…'`, and Shopify's
    # calculated query cost: a leaky bucket of `bucket_size` points refilled at
    # `restore_rate` per second (Standard plan: 100), a query asking more than is left
    # answered THROTTLED. Costs follow Shopify's rules (object 1, connection 2 + first ×
    # node) for the hub's own queries (webhooks/shopify/backfill.py).

    def _init_listing(self) -> None:
        self.listed: dict[str, list[dict]] = {"customers": [], "subscriptionContracts": [], "orders": []}
        self.bucket_size, self.restore_rate = 2000.0, 100.0
        self._available, self._bucket_at = 2000.0, time.monotonic()
        self._bucket_lock = threading.Lock()
        self.throttled = 0

    def listing_answer(self, body: dict) -> tuple[int, dict]:
        query, variables = body.get("query", ""), body.get("variables") or {}
        connection = _LISTING.search(query)["connection"]
        first = min(250, int(variables.get("first") or 50))
        counted = f"{connection}Count(" in query
        requested = 2 + first * _NODE_COST[connection] + (1 if counted else 0)
        refused = self._throttled(requested)
        if refused:
            return refused
        nodes = self.listed[connection]
        if connection == "subscriptionContracts":
            if not self.can_read_contracts():
                return 200, {"errors": [access_denied(connection)]}
            nodes = [n for n in nodes if self.owned(n.get("id", ""))]  # only the app's own
        if connection == "orders" and "read_all_orders" not in self.scopes:
            # "Only the last 60 days' worth of orders from a store are accessible from the Order
            # object by default ... you need to request access to all orders" (read_all_orders,
            # https://shopify.dev/docs/api/admin-graphql/latest/objects/Order).
            oldest = datetime.now(timezone.utc) - timedelta(days=60)
            nodes = [n for n in nodes if datetime.fromisoformat(n["createdAt"].replace("Z", "+00:00")) >= oldest]
        since = _UPDATED_AFTER.search(variables.get("query") or "")
        if since:
            after = datetime.fromisoformat(since["at"])
            nodes = [n for n in nodes if datetime.fromisoformat(n["updatedAt"]) > after]
        start = int(variables["after"].removeprefix("cursor:")) if variables.get("after") else 0
        page = nodes[start:start + first]
        end = start + len(page)
        data = {connection: {"nodes": page, "pageInfo": {"hasNextPage": end < len(nodes),
                                                        "endCursor": f"cursor:{end}" if page else None}}}
        if counted:
            data[f"{connection}Count"] = {"count": len(nodes), "precision": "EXACT"}
        return 200, {"data": data, "extensions": {"cost": self._spend(
            requested, 2 + len(page) * _NODE_COST[connection] + (1 if counted else 0))}}

    # One bucket for every query the hub sends, listings or not: "each app-store pair has a
    # bucket" (https://shopify.dev/docs/apps/build/apis/graphql-admin/rate-limits). A query is
    # refused THROTTLED when it asks more than is left, and pays what it actually cost.

    def spend(self, points: float) -> None:
        """Another call of the app on this store (a backfill's listing beside) spends `points`."""
        self._throttled(0.0)  # the bucket refilled up to now
        self._spend(0.0, points)

    def _throttled(self, requested: float) -> tuple[int, dict] | None:
        """THROTTLED, with the bucket's state, for a query asking more than is left; else None."""
        with self._bucket_lock:
            now = time.monotonic()
            self._available = min(self.bucket_size, self._available + (now - self._bucket_at) * self.restore_rate)
            self._bucket_at = now
            if requested <= self._available:
                return None
            self.throttled += 1
            cost = {"requestedQueryCost": requested, "actualQueryCost": None, "throttleStatus": self._status()}
        return 200, {"errors": [{"message": "Throttled", "extensions": {
            "code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
            "extensions": {"cost": cost}}

    def _spend(self, requested: float, actual: float) -> dict:
        """Take a served query's actual cost from the bucket; the answer's `extensions.cost`."""
        with self._bucket_lock:
            self._available -= actual
            return {"requestedQueryCost": requested, "actualQueryCost": actual, "throttleStatus": self._status()}

    def _status(self) -> dict:
        return {"maximumAvailable": self.bucket_size, "currentlyAvailable": int(self._available),
                "restoreRate": self.restore_rate}

    def _costed(self, requested: float, actual: float, data: dict) -> tuple[int, dict]:
        """A single-object query's answer, or THROTTLED when the bucket lacks what it asks."""
        refused = self._throttled(requested)
        return refused or (200, {"data": data, "extensions": {"cost": self._spend(requested, actual)}})

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = dict(parse_qsl(raw.decode("utf-8", "replace")))  # the token grant's form
                headers = {key.lower(): value for key, value in self.headers.items()}
                status, answer = fake.answer(self.path, headers, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                served = fake.version_served(self.path)
                if served is not None:
                    self.send_header("X-Shopify-API-Version", served)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep test output quiet
                pass

        return Handler
