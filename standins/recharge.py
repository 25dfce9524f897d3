"""A loopback stand-in of Recharge's Admin API 2021-11 as the hub calls it: the list APIs
(`GET /customers|subscriptions|charges`), webhook registration (`POST/GET/PUT/DELETE
/webhooks`), a customer (`GET /customers/{id}`, with the hash the customer portal opens on)
and the portal page the customer's browser opens; and it posts signed webhooks to what was
registered.

It speaks Recharge's shapes: `X-Recharge-Access-Token` (401 without it or with another),
`X-Recharge-Version` (2021-11 answers carry the cursors in the body; without the header the
token's default, 2021-01 here, carries them in a Link header only), cursor pagination with
`limit` (50 by default, at most 250) and `cursor`, the leaky-bucket rate limit: 40 calls,
leaking 2 a second, 429 when full, and the charges' 90-day lookback (below).

    with FakeRecharge(token="rc_token", client_secret="rc_secret") as rc:
        settings.RECHARGE_API_BASE = rc.url
        rc.customers.append({"id": 1, "email": ..., "updated_at": "2022-03-09T02:36:35", ...})
        rc.subscriptions.append({...}); rc.charges.append({...})   # bare resources
        rc.deliver("charge/paid", {"charge": {...}})   # POSTs to every webhook of that topic
        rc.throttled                                  # 429s answered by the bucket
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

from standins.loopback import Call, LoopbackServer

VERSION = "2021-11"
VERSIONS = ("2021-01", "2021-11")

# "the bucket size is 40 calls (which cannot be exceeded at any given time), with a 'leak rate'
# of 2 calls per second that continually empties the bucket ... If the 'leaky bucket' becomes
# full, no additional requests will be processed, and a 429 error code will be returned"
# (https://docs.getrecharge.com/docs/api-rate-limits). Every answer says how full the bucket
# is in X-Recharge-Limit, "<used>/<size>" (read by Recharge's client libraries, e.g.
# https://github.com/ChemicalLuck/recharge-api recharge/base.py); the docs name no Retry-After.
BUCKET_SIZE = 40
LEAK_PER_S = 2.0

# "Recharge sets a limit of 50 records per batch ... You can increase the limit to a maximum of
# 250"; in 2021-11 "Cursor values for the next and previous cursor values appear separately in
# the body of the JSON response as the previous_cursor and next_cursor keys", absent on the
# first (previous) and last (next) batch; 2021-01 gives them in the Link header
# (https://docs.getrecharge.com/docs/using-cursor-pagination-with-the-recharge-api).
DEFAULT_LIMIT, MAX_LIMIT = 50, 250

# The customer portal. A store's hosted portal opens on the customer's `hash`, which the Admin
# API gives with the customer (GET /customers/{id}): "The hash value acts as an authenticator
# to authorize the customer to access the relevant customer portal", linked as
# https://<recharge-subdomain>.admin.rechargeapps.com/portal/<customer_hash>/subscriptions
# (https://docs.getrecharge.com/docs/build-a-recharge-hosted-customer-portal). A visitor without
# a portal session signs in there with a code sent to their email (Recharge's client,
# @rechargeapps/storefront-client 2.3.0, api/auth.js sendPasswordlessCode: POST /attempt_login).
# Temporary-token portal URLs (`portal_access`: base_url, customer_hash, expires_at, portal_url,
# temp_token, https://storefront.getrecharge.com/client/docs/types/interfaces/
# CustomerPortalAccessResponse) come only from the Storefront API, GET /portal_access with the
# customer's own session token (that client's api/customer.js getCustomerPortalAccess); the
# Admin API has no call that makes them for a customer, so the stand-in answers none, and a
# hash link has no lifetime. Pages: the portal's destinations
# (https://storefront.getrecharge.com/client/docs/types/interfaces/CustomerPortalAccessOptions/).
PORTAL_DESTINATIONS = ("payment_methods", "subscriptions", "shipping", "delivery_schedule", "orders", "overview")

# Webhook topics of API 2021-11 the stand-in accepts for registration
# (https://developer.rechargepayments.com/2021-11/webhooks_endpoints/webhooks_available).
TOPICS = frozenset({
    "customer/created", "customer/updated", "customer/activated", "customer/deactivated", "customer/deleted",
    "subscription/created", "subscription/updated", "subscription/activated", "subscription/cancelled",
    "subscription/deleted", "subscription/paused", "subscription/skipped", "subscription/unskipped",
    "subscription/swapped", "charge/created", "charge/upcoming", "charge/paid", "charge/failed",
    "charge/max_retries_reached", "charge/refunded", "charge/updated", "charge/deleted",
    "order/created", "order/updated", "order/deleted", "order/processed", "order/cancelled",
    "address/created", "address/updated",
})


LOOKBACK = timedelta(days=90)


class FakeRecharge(LoopbackServer):
    """One Recharge store; `token` is the only API token it accepts, `client_secret` the key
    its webhooks are signed with."""

    ROUTES = [
        ("GET", r"/customers", "list_customers"),
        ("GET", r"/subscriptions", "list_subscriptions"),
        ("GET", r"/charges", "list_charges"),
        ("GET", r"/customers/(?P<customer>\d+)", "get_customer"),
        ("GET", r"/webhooks", "list_webhooks"),
        ("POST", r"/webhooks", "create_webhook"),
        ("PUT", r"/webhooks/(?P<webhook>\d+)", "update_webhook"),
        ("DELETE", r"/webhooks/(?P<webhook>\d+)", "delete_webhook"),
        ("GET", r"/portal/(?P<hash>[^/]+)/(?P<page>[^/]+)", "open_portal"),
    ]

    def __init__(self, token: str = "rc_standin_token", client_secret: str = "rc_standin_secret",
                 default_version: str = "2021-01", now: datetime | None = None):
        super().__init__()
        self.now = now  # the lookback's "today"; None: the real one
        self.token, self.client_secret, self.default_version = token, client_secret, default_version
        self.customers: list[dict] = []
        self.subscriptions: list[dict] = []
        self.charges: list[dict] = []
        self.webhooks: list[dict] = []
        self.deliveries: list[tuple[str, int]] = []  # (topic, HTTP status the receiver answered)
        self.throttled = 0
        self._level, self._leaked_at = 0.0, time.monotonic()
        self._ids = iter(range(7_000_001, 8_000_000))

    # Authentication, versions, the bucket -------------------------------------------------

    def authorized(self, call: Call) -> bool:
        if call.path.startswith("/portal/"):
            return True  # opened by the customer's browser, which signs in there
        return _header(call, "X-Recharge-Access-Token") == self.token

    def error_body(self, status: int, message: str) -> dict:
        if status == 401:
            return {"errors": "A valid access token is required (X-Recharge-Access-Token)."}
        if status == 429:
            return {"errors": "Too many requests: the API call limit is 40 calls, leaking 2 per second."}
        return {"errors": message}

    def _leak(self) -> None:
        now = time.monotonic()
        self._level = max(0.0, self._level - (now - self._leaked_at) * LEAK_PER_S)
        self._leaked_at = now

    def _spend(self) -> tuple[int, dict, dict] | None:
        """Count one call in the bucket; the 429 answer when it is full."""
        self._leak()
        if self._level + 1 > BUCKET_SIZE:
            self.throttled += 1
            return 429, self.error_body(429, ""), {"X-Recharge-Limit": f"{BUCKET_SIZE}/{BUCKET_SIZE}"}
        self._level += 1
        return None

    def spend(self, calls: int) -> None:
        """Calls the store's other apps make with the same token: they fill the same bucket."""
        with self.lock:
            self._leak()
            self._level = min(float(BUCKET_SIZE), self._level + calls)

    def _limit_header(self) -> dict:
        return {"X-Recharge-Limit": f"{int(self._level + 0.999)}/{BUCKET_SIZE}"}

    def _version(self, call: Call) -> str | None:
        asked = _header(call, "X-Recharge-Version")
        return self.default_version if asked is None else (asked if asked in VERSIONS else None)

    def _api(self, call: Call, handler) -> tuple:
        """Bucket and version checks around one API call; the limit header on every answer."""
        full = self._spend()
        if full is not None:
            return full
        version = self._version(call)
        if version is None:
            return 400, {"errors": f"Unsupported X-Recharge-Version {_header(call, 'X-Recharge-Version')!r}; "
                                   f"use one of {', '.join(VERSIONS)}"}, self._limit_header()
        status, document, *rest = handler(version)
        return status, document, {**(rest[0] if rest else {}), **self._limit_header()}

    # Lists --------------------------------------------------------------------------------

    def list_customers(self, call: Call):
        return self._api(call, lambda v: self._listing(call, v, "customers", self.customers))

    def list_subscriptions(self, call: Call):
        return self._api(call, lambda v: self._listing(call, v, "subscriptions", self.subscriptions))

    def list_charges(self, call: Call):
        # Since 19 March 2025 "success, refunded, or partially-refunded processed charges over
        # 90 days ago will no longer appear in the results" of the charge list and retrieve
        # endpoints; queued and errored charges still do (https://changelog.getrecharge.com/label/6202).
        return self._api(call, lambda v: self._listing(call, v, "charges", [
            c for c in self.charges if not self._past_lookback(c)]))

    def _past_lookback(self, charge: dict) -> bool:
        if str(charge.get("status") or "").lower() not in ("success", "refunded", "partially_refunded"):
            return False
        processed = charge.get("processed_at")
        if not processed:
            return False
        at = datetime.fromisoformat(processed.replace("Z", "+00:00"))
        at = at if at.tzinfo else at.replace(tzinfo=timezone.utc)
        return at < (self.now or datetime.now(timezone.utc)) - LOOKBACK

    def list_webhooks(self, call: Call):
        return self._api(call, lambda v: self._listing(call, v, "webhooks", self.webhooks))

    def _listing(self, call: Call, version: str, key: str, objects: list[dict]):
        try:
            limit = int(_one(call, "limit") or DEFAULT_LIMIT)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIMIT:
            return 422, {"errors": {"limit": f"must be between 1 and {MAX_LIMIT}"}}
        cursor = _one(call, "cursor")
        if cursor:
            # A cursor carries the filters and order of the call that made it.
            try:
                state = json.loads(base64.urlsafe_b64decode(cursor.encode()))
                filters, position = state["filters"], int(state["at"])
            except (ValueError, KeyError, TypeError):
                return 422, {"errors": {"cursor": "invalid cursor"}}
        else:
            filters = {name: value for name in ("updated_at_min", "sort_by", "status", "customer_id")
                       if (value := _one(call, name))}
            position = 0
        kept = _filtered(objects, filters)
        page = kept[position:position + limit]
        following = _cursor(filters, position + limit) if position + limit < len(kept) else None
        previous = _cursor(filters, max(0, position - limit)) if position > 0 else None
        if version == "2021-11":
            return 200, {key: page, "next_cursor": following, "previous_cursor": previous}
        links = [f'<{self.url}{call.path}?{urlencode({"limit": limit, "cursor": c})}>; rel="{rel}"'
                 for rel, c in (("previous", previous), ("next", following)) if c]
        return 200, {key: page}, ({"Link": ", ".join(links)} if links else {})

    # Webhooks -----------------------------------------------------------------------------

    def create_webhook(self, call: Call):
        def create(version):
            body = call.body if isinstance(call.body, dict) else {}
            problem = _webhook_problem(body)
            if problem:
                return 422, {"errors": problem}
            hook = {"id": next(self._ids), "address": body["address"], "topic": body["topic"],
                    "included_objects": list(body.get("included_objects") or []), "version": VERSION}
            self.webhooks.append(hook)
            return 201 if version == "2021-11" else 200, {"webhook": dict(hook)}
        return self._api(call, create)

    def update_webhook(self, call: Call):
        def update(version):
            hook = next((h for h in self.webhooks if str(h["id"]) == call.params["webhook"]), None)
            if hook is None:
                return 404, {"errors": "Not Found"}
            body = call.body if isinstance(call.body, dict) else {}
            problem = _webhook_problem({**hook, **body})
            if problem:
                return 422, {"errors": problem}
            hook.update({k: body[k] for k in ("address", "topic", "included_objects") if k in body})
            return 200, {"webhook": dict(hook)}
        return self._api(call, update)

    def delete_webhook(self, call: Call):
        def delete(version):
            before = len(self.webhooks)
            self.webhooks[:] = [h for h in self.webhooks if str(h["id"]) != call.params["webhook"]]
            return (204, None) if len(self.webhooks) < before else (404, {"errors": "Not Found"})
        return self._api(call, delete)

    def deliver(self, topic: str, payload: dict, timeout: float = 10.0) -> list[int]:
        """POST `payload` to every webhook registered for `topic`, signed as Recharge signs:
        the timestamp-bound `X-Recharge-Webhook-Signature: t=<epoch>,v1=<hex HMAC-SHA256 of
        "<t>.<raw body>">` and the legacy `X-Recharge-Hmac-Sha256` (hex SHA-256 of the client
        secret followed by the raw body), both keyed by the API client secret
        (https://docs.getrecharge.com/docs/webhooks-overview#validating-webhooks). The statuses
        the receivers answered (a non-2xx is a failed delivery Recharge retries)."""
        body = json.dumps(payload).encode()
        stamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-Recharge-Topic": topic,
                   "X-Recharge-Webhook-Timestamp": stamp,
                   "X-Recharge-Webhook-Signature": "t={},v1={}".format(stamp, hmac.new(
                       self.client_secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()),
                   "X-Recharge-Hmac-Sha256": hashlib.sha256(self.client_secret.encode() + body).hexdigest()}
        with self.lock:
            targets = [h["address"] for h in self.webhooks if h["topic"] == topic]
        statuses = []
        for address in targets:
            request = urllib.request.Request(address, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=timeout) as answer:
                    status = answer.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            statuses.append(status)
            with self.lock:
                self.deliveries.append((topic, status))
        return statuses

    # Customer portal ----------------------------------------------------------------------

    def get_customer(self, call: Call):
        def retrieve(version):
            customer = next((c for c in self.customers if str(c["id"]) == call.params["customer"]), None)
            if customer is None:
                return 404, {"errors": "Not Found"}
            return 200, {"customer": {**customer, "hash": _customer_hash(customer)}}
        return self._api(call, retrieve)

    def open_portal(self, call: Call):
        customer = next((c for c in self.customers if _customer_hash(c) == call.params["hash"]), None)
        if customer is None or call.params["page"] not in PORTAL_DESTINATIONS:
            return 404, {"errors": "Not Found"}
        return 200, {"page": call.params["page"], "customer": customer["id"], "sign_in": "email code"}


def _customer_hash(customer: dict) -> str:
    return customer.get("hash") or hashlib.md5(str(customer["id"]).encode()).hexdigest()[:30]


def _header(call: Call, name: str) -> str | None:
    return next((v for k, v in call.headers.items() if k.lower() == name.lower()), None)


def _one(call: Call, name: str) -> str | None:
    return (call.query.get(name) or [None])[0]


def _cursor(filters: dict, at: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"filters": filters, "at": at}).encode()).decode()


def _stamp(value) -> str:
    """Recharge times compare as UTC whether or not they carry an offset."""
    text = str(value or "")
    return re.sub(r"(\+00:00|Z)$", "", text)


def _filtered(objects: list[dict], filters: dict) -> list[dict]:
    kept = list(objects)
    if filters.get("updated_at_min"):
        floor = _stamp(filters["updated_at_min"])
        kept = [o for o in kept if _stamp(o.get("updated_at")) >= floor]
    for name in ("status", "customer_id"):
        if filters.get(name):
            kept = [o for o in kept if str(o.get(name) or "").lower() == str(filters[name]).lower()]
    field, _, direction = (filters.get("sort_by") or "id-desc").rpartition("-")
    key = (lambda o: (_stamp(o.get("updated_at")), o["id"])) if field == "updated_at" else (lambda o: o["id"])
    return sorted(kept, key=key, reverse=direction == "desc")


def _webhook_problem(body: dict) -> dict | None:
    address, topic = body.get("address"), body.get("topic")
    if not isinstance(address, str) or not re.match(r"https?://", address):
        return {"address": "must be a valid URL"}
    if topic not in TOPICS:
        return {"topic": f"{topic!r} is not a valid webhook topic"}
    return None

