"""A loopback stand-in of Stripe's API (`/v1/...`), for the stripe library with its API base
pointed here (`StripeClient(..., base_addresses={"api": fake.url})`).

It speaks Stripe's shapes: form-encoded requests (`enabled_events[0]=…`), objects with
`id`/`object`, list objects (`{"object": "list", "data", "has_more", "url"}`) paged with
`limit`/`starting_after`, Stripe's error document with 401 for a wrong key, and 429 past
`rate_per_second` API requests in any second (Stripe's per-account limit), with no
Retry-After, and a 400 for a webhook endpoint enabling an event type Stripe does not have.
Routes are a table (ROUTES): add a (method, path regex, handler) entry and a handler per object.

    with FakeStripe(key="sk_test_ok") as stripe_api:
        settings.STRIPE_API_BASE = stripe_api.url
        ...
        stripe_api.webhook_endpoints          # id → webhook_endpoint object
"""
from __future__ import annotations

import itertools
import secrets
import time
from typing import get_args
from urllib.parse import parse_qsl

from stripe.params import WebhookEndpointCreateParams

from standins.loopback import Call, LoopbackServer, RollingLimit

# The event types an endpoint may enable, as the stripe library lists them for its API
# version (enabled_events of POST /v1/webhook_endpoints): Stripe refuses any other.
EVENT_TYPES = frozenset(get_args(get_args(WebhookEndpointCreateParams.__annotations__["enabled_events"])[0]))


def form(call: Call) -> dict:
    """A Stripe form body as nested dicts and lists (`a[0]=x` → list, `m[k]=v` → dict)."""
    decoded: dict = {}
    for key, value in parse_qsl(call.raw.decode("utf-8"), keep_blank_values=True):
        name, *path = key.replace("]", "").split("[")
        if not path:
            decoded[name] = value
            continue
        holder = decoded.setdefault(name, [] if path[0].isdigit() else {})
        if isinstance(holder, list):
            holder.append(value)
        else:
            holder[path[0]] = value
    return decoded


def page(objects: list[dict], call: Call, url: str) -> dict:
    """A Stripe list object of `objects` (newest first), honouring limit and starting_after."""
    limit = int((call.query.get("limit") or ["10"])[0])
    after = (call.query.get("starting_after") or [None])[0]
    start = next((i + 1 for i, o in enumerate(objects) if o["id"] == after), 0) if after else 0
    data = objects[start:start + limit]
    return {"object": "list", "url": url, "has_more": start + limit < len(objects), "data": data}


class FakeStripe(LoopbackServer):
    """Stripe's API for one account; `key` is the only API key it accepts."""

    ROUTES = [
        ("GET", r"/v1/account", "account"),
        # Webhook endpoints (`hub install`).
        ("GET", r"/v1/webhook_endpoints", "list_webhook_endpoints"),
        ("POST", r"/v1/webhook_endpoints", "create_webhook_endpoint"),
        ("POST", r"/v1/webhook_endpoints/(?P<id>we_\w+)", "update_webhook_endpoint"),
        # Backfill and reconciliation listings (see "Listings" below).
        ("GET", r"/v1/customers", "list_customers"),
        ("GET", r"/v1/customers/(?P<id>cus_\w+)", "get_customer"),
        ("GET", r"/v1/subscriptions", "list_subscriptions"),
        ("GET", r"/v1/subscriptions/(?P<id>sub_\w+)", "get_subscription"),
        ("GET", r"/v1/subscription_schedules/(?P<id>sub_sched_\w+)", "get_subscription_schedule"),
        ("GET", r"/v1/invoices", "list_invoices"),
        ("GET", r"/v1/events", "list_events"),
        # The payments of an invoice (ENRICH: why a payment failed).
        ("GET", r"/v1/invoice_payments", "list_invoice_payments"),
        # What a plan change billed (ENRICH: its invoice, or its prorations left pending).
        ("GET", r"/v1/invoices/(?P<id>in_\w+)", "get_invoice"),
        ("GET", r"/v1/charges/(?P<id>(ch|py)_\w+)", "get_charge"),
        # A charge's refunds with their status (ENRICH: a refund that failed gave its money back).
        ("GET", r"/v1/refunds", "list_refunds"),
        ("GET", r"/v1/invoiceitems", "list_invoice_items"),
    ]

    def __init__(self, key: str = "sk_test_standin", rate_per_second: int | None = None):
        super().__init__()
        self.key = key
        # "The global API rate limit applies to the total API usage per account": every
        # request counts, not the listings alone (https://docs.stripe.com/rate-limits).
        self.limit = RollingLimit(rate_per_second, 1.0) if rate_per_second else None
        self.webhook_endpoints: dict[str, dict] = {}
        self._ids = itertools.count(1)
        # Listings, newest first as Stripe lists them: lists of objects, or Generated ones.
        self.customers: list[dict] = []
        self.subscriptions: list[dict] = []
        self.invoices: list[dict] = []
        self.events: list[dict] = []
        self.invoice_payments: list[dict] = []
        self.invoice_items: list[dict] = []
        self.payment_intents: dict[str, dict] = {}  # id → payment_intent, for expand
        self.charges: dict[str, dict] = {}  # id → charge, for GET /v1/charges/:id
        self.refunds: list[dict] = []  # newest first, for GET /v1/refunds?charge=…
        self.subscription_schedules: dict[str, dict] = {}  # id → schedule, its items' prices as ids
        self.prices: dict[str, dict] = {}  # id → price, for expand[]=phases.items.price

    def authorized(self, call: Call) -> bool:
        return call.headers.get("Authorization") == f"Bearer {self.key}"

    def error_body(self, status: int, message: str) -> dict:
        if status == 401:
            message = "Invalid API Key provided: " + message
        return {"error": {"type": "invalid_request_error", "message": message}}

    @property
    def throttled(self) -> int:
        """API requests refused with 429 for the per-second limit."""
        return self.limit.throttled if self.limit else 0

    def refusal(self, wait: float) -> tuple[int, object, dict]:
        # Stripe's rate-limit page names no Retry-After: it asks clients to back off
        # exponentially (https://docs.stripe.com/rate-limits, "Handling limiting gracefully").
        return 429, {"error": {"type": "invalid_request_error", "code": "rate_limit",
                               "message": "Request rate limit exceeded. Learn more about rate limits "
                                          "here https://stripe.com/docs/rate-limits."}}, {}

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_standin{next(self._ids):06d}"

    def account(self, call: Call):
        return 200, {"id": "acct_standin", "object": "account", "country": "CA"}

    # Webhook endpoints ------------------------------------------------------------------

    def list_webhook_endpoints(self, call: Call):
        newest_first = list(reversed(self.webhook_endpoints.values()))  # Stripe lists newest first
        return 200, page([_public(e) for e in newest_first], call, "/v1/webhook_endpoints")

    def create_webhook_endpoint(self, call: Call):
        body = form(call)
        if not body.get("url") or not body.get("enabled_events"):
            missing = "url" if not body.get("url") else "enabled_events"
            return 400, {"error": {"type": "invalid_request_error", "param": missing,
                                   "message": f"Missing required param: {missing}."}}
        if refused := _unknown_event_type(body["enabled_events"]):
            return refused
        endpoint = {
            # Events for the endpoint are rendered in `api_version`; without it, in the account's
            # default version, and the object says null (https://stripe.com/docs/api/webhook_endpoints).
            "id": self.new_id("we"), "object": "webhook_endpoint", "api_version": body.get("api_version"),
            "application": None, "created": int(time.time()),
            "description": body.get("description"), "enabled_events": body["enabled_events"],
            "livemode": False, "metadata": body.get("metadata") or {}, "status": "enabled",
            "url": body["url"], "secret": "whsec_" + secrets.token_hex(16),
        }
        self.webhook_endpoints[endpoint["id"]] = endpoint
        return 200, dict(endpoint)  # the only answer that carries the secret, as on Stripe

    def update_webhook_endpoint(self, call: Call):
        endpoint = self.webhook_endpoints.get(call.params["id"])
        if endpoint is None:
            return 404, {"error": {"type": "invalid_request_error", "code": "resource_missing",
                                   "message": f"No such webhook endpoint: '{call.params['id']}'"}}
        body = form(call)
        # The update call takes these only: `api_version` is set when an endpoint is created and
        # never changed (https://stripe.com/docs/api/webhook_endpoints/update); Stripe refuses
        # any other parameter.
        unknown = sorted(set(body) - {"url", "enabled_events", "description", "metadata", "disabled", "expand"})
        if unknown:
            return 400, {"error": {"type": "invalid_request_error", "param": unknown[0],
                                   "message": f"Received unknown parameter: {unknown[0]}"}}
        if "enabled_events" in body and (refused := _unknown_event_type(body["enabled_events"])):
            return refused
        for name in ("url", "enabled_events", "description"):
            if name in body:
                endpoint[name] = body[name]
        if "metadata" in body:
            endpoint["metadata"].update(body["metadata"])
        if "disabled" in body:
            endpoint["status"] = "disabled" if body["disabled"] == "true" else "enabled"
        return 200, _public(endpoint)


    # Listings (backfill and reconciliation) ----------------------------------------------

    def list_customers(self, call: Call):
        since = _created_gte(call)
        return self._listing(call, self.customers, "/v1/customers",
                             lambda o: since is None or o["created"] >= since)

    def get_customer(self, call: Call):
        return _retrieve_answer("customer", self._customer(call.params["id"]), call)

    def list_subscriptions(self, call: Call):
        since = _created_gte(call)
        status = _one(call, "status")
        # Without status=all, Stripe leaves canceled subscriptions out.
        return self._listing(call, self.subscriptions, "/v1/subscriptions", lambda o: (
            (since is None or o["created"] >= since)
            and (status == "all" or (o["status"] == status if status else o["status"] != "canceled"))))

    def get_subscription(self, call: Call):
        return _retrieve_answer("subscription", _find(self.subscriptions, call.params["id"]), call)

    def get_subscription_schedule(self, call: Call):
        """GET /v1/subscription_schedules/:id: a phase's items name their price by id unless
        `expand[]=phases.items.price` asks for the objects
        (https://docs.stripe.com/api/subscription_schedules/object, https://docs.stripe.com/expand)."""
        found = self.subscription_schedules.get(call.params["id"])
        if found is None:
            return _missing("subscription_schedule", call.params["id"])
        expand = {v[0] for k, v in call.query.items() if k.startswith("expand[")}
        if "phases.items.price" in expand:
            found = {**found, "phases": [
                {**phase, "items": [{**item, "price": self.prices.get(item["price"], item["price"])}
                                    if isinstance(item.get("price"), str) else item
                                    for item in phase.get("items") or []]}
                for phase in found.get("phases") or []]}
        return 200, found

    def list_invoices(self, call: Call):
        since = _created_gte(call)
        return self._listing(call, self.invoices, "/v1/invoices",
                             lambda o: since is None or o["created"] >= since)

    def list_events(self, call: Call):
        since = _created_gte(call)
        types = {v[0] for k, v in call.query.items() if k.startswith("types[")}
        # "types: An array of up to 20 strings containing specific event names"
        # (https://docs.stripe.com/api/events/list#list_events-types).
        if len(types) > 20:
            return 400, {"error": {"type": "invalid_request_error", "param": "types",
                                   "message": "Invalid array: types must have at most 20 elements."}}
        return self._listing(call, self.events, "/v1/events", lambda o: (
            (since is None or o["created"] >= since) and (not types or o["type"] in types)))

    def add_invoice_payment(self, invoice: dict, intent: dict) -> dict:
        """Record `intent` as a payment of `invoice`, as Stripe does when it attempts one."""
        self.payment_intents[intent["id"]] = intent
        if not any(i["id"] == invoice["id"] for i in self.invoices):
            self.invoices.insert(0, invoice)
        status = {"succeeded": "paid", "canceled": "canceled"}.get(intent.get("status"), "open")
        payment = {"id": self.new_id("inpay"), "object": "invoice_payment",
                   "amount_paid": intent.get("amount_received") if status == "paid" else None,
                   "amount_requested": intent.get("amount"),
                   "created": intent.get("created") or int(time.time()),
                   "currency": intent.get("currency"), "invoice": invoice["id"], "is_default": True,
                   "livemode": False,
                   "payment": {"type": "payment_intent", "payment_intent": intent["id"]},
                   "status": status, "status_transitions": {"canceled_at": None, "paid_at": None}}
        self.invoice_payments.insert(0, payment)  # newest first
        return payment

    def list_invoice_payments(self, call: Call):
        """GET /v1/invoice_payments, by `invoice` or by `payment[payment_intent]`; `expand[]`
        of data.payment.payment_intent and data.invoice swaps the ids for the objects
        (https://docs.stripe.com/api/invoice-payment/list: the list holds invoice_payment
        objects whose `payment` is {"type": "payment_intent", "payment_intent": "pi_…"})."""
        invoice, intent = _one(call, "invoice"), _one(call, "payment[payment_intent]")
        def keep(o):
            return ((invoice is None or o["invoice"] == invoice)
                    and (intent is None or o["payment"].get("payment_intent") == intent))

        status, result = self._listing(call, self.invoice_payments, "/v1/invoice_payments", keep)
        if status != 200:
            return status, result
        expand = {v[0] for k, v in call.query.items() if k.startswith("expand[")}
        data = []
        for o in result["data"]:
            o = {**o, "payment": dict(o["payment"])}
            if "data.payment.payment_intent" in expand:
                pi = o["payment"].get("payment_intent")
                o["payment"]["payment_intent"] = self.payment_intents.get(pi, pi)
            if "data.invoice" in expand:
                o["invoice"] = next((i for i in self.invoices if i["id"] == o["invoice"]),
                                    o["invoice"])
            data.append(o)
        return 200, {**result, "data": data}

    def get_invoice(self, call: Call):
        return _retrieve_answer("invoice", _find(self.invoices, call.params["id"]), call)

    def get_charge(self, call: Call):
        return _retrieve_answer("charge", self.charges.get(call.params["id"]), call)

    def list_refunds(self, call: Call):
        """GET /v1/refunds, by `charge` or `payment_intent` ("Only return refunds for the charge
        specified by this charge ID", https://docs.stripe.com/api/refunds/list); each Refund
        carries its `status`: pending, requires_action, succeeded, failed or canceled
        (https://docs.stripe.com/api/refunds/object)."""
        charge, intent = _one(call, "charge"), _one(call, "payment_intent")
        return self._listing(call, self.refunds, "/v1/refunds", lambda r: (
            (charge is None or r.get("charge") == charge) and (intent is None or r.get("payment_intent") == intent)))

    def prorate(self, subscription: dict, amounts: list[int], at: int) -> list[dict]:
        """The invoice items a change of `subscription` with Stripe's default
        proration_behavior=create_prorations leaves pending for the next invoice: one per
        amount (a credit for the unused time is negative), each `proration: true`, named by
        its subscription under parent.subscription_details since API 2025-03-31
        (https://docs.stripe.com/billing/subscriptions/prorations,
        https://docs.stripe.com/api/invoiceitems/object)."""
        items = (subscription.get("items") or {}).get("data") or [{}]
        # A proration covers the change's time to the end of the current period.
        end = subscription.get("current_period_end") or items[0].get("current_period_end") or at
        made = []
        for amount in amounts:
            item = {"id": self.new_id("ii"), "object": "invoiceitem", "amount": amount,
                    "currency": subscription.get("currency") or "usd", "customer": subscription["customer"],
                    "date": at, "discountable": False, "invoice": None, "livemode": False,
                    "parent": {"type": "subscription_details", "subscription_details": {
                        "subscription": subscription["id"], "subscription_item": None}},
                    "period": {"start": at, "end": end}, "proration": True, "quantity": 1}
            self.invoice_items.insert(0, item)  # newest first
            made.append(item)
        return made

    def list_invoice_items(self, call: Call):
        """GET /v1/invoiceitems by `customer`, `created[gte|lte]`, `invoice` and `pending`
        (true: not yet on an invoice), https://docs.stripe.com/api/invoiceitems/list."""
        customer, invoice, pending = _one(call, "customer"), _one(call, "invoice"), _one(call, "pending")
        since, until = _created_gte(call), _one(call, "created[lte]")

        def keep(o):
            return ((customer is None or o["customer"] == customer) and (invoice is None or o["invoice"] == invoice)
                    and (pending is None or (o["invoice"] is None) == (pending == "true"))
                    and (since is None or o["date"] >= since) and (until is None or o["date"] <= int(until)))
        return self._listing(call, self.invoice_items, "/v1/invoiceitems", keep)

    def _customer(self, customer_id: str) -> dict | None:
        return _find(self.customers, customer_id)

    def _listing(self, call: Call, objects, url: str, keep):
        limit = min(100, max(1, int(_one(call, "limit") or 10)))
        after = _one(call, "starting_after")
        start = (_index(objects, after) + 1) if after else 0
        data, i = [], start
        while i < len(objects) and len(data) < limit:
            if keep(objects[i]):
                data.append(objects[i])
            i += 1
        more = any(keep(objects[j]) for j in range(i, len(objects)))
        expand = {v[0] for k, v in call.query.items() if k.startswith("expand[")}
        if "data.customer" in expand:
            data = [{**o, "customer": self._customer(o["customer"]) or o["customer"]}
                    if isinstance(o.get("customer"), str) else o for o in data]
        return 200, {"object": "list", "url": url, "has_more": more, "data": data}


class Generated:
    """A long listing made on demand (benchmarks): item i is `make(i)`, its id `prefix + i`
    in eight digits; index and lookup by id need no table."""

    def __init__(self, count: int, make, prefix: str):
        self.count, self.make, self.prefix = count, make, prefix

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.count:
            raise IndexError(i)
        return self.make(i)

    def index(self, object_id: str) -> int:
        if not object_id.startswith(self.prefix):
            raise ValueError(object_id)
        return int(object_id[len(self.prefix):])

    def get(self, object_id: str) -> dict | None:
        try:
            i = self.index(object_id)
        except ValueError:
            return None
        return self.make(i) if 0 <= i < self.count else None


def _unknown_event_type(enabled: list) -> tuple[int, dict] | None:
    """Stripe's 400 for the first enabled event type it does not have (the wording is the
    stand-in's), or None."""
    for i, name in enumerate(enabled):
        if name not in EVENT_TYPES:
            return 400, {"error": {"type": "invalid_request_error", "param": f"enabled_events[{i}]",
                                   "message": f"Invalid enabled_events[{i}]: {name!r} is not an event type"}}
    return None


def _find(objects, object_id: str) -> dict | None:
    """One object of a listing by id (a Generated one answers without being walked)."""
    if isinstance(objects, Generated):
        return objects.get(object_id)
    return next((o for o in objects if o["id"] == object_id), None)


def _retrieve_answer(kind: str, found: dict | None, call: Call) -> tuple[int, dict]:
    """A retrieve's answer: the object, or Stripe's resource_missing for the id asked."""
    return (200, found) if found is not None else _missing(kind, call.params["id"])


def _missing(kind: str, object_id: str) -> tuple[int, dict]:
    return 404, {"error": {"type": "invalid_request_error", "code": "resource_missing", "param": "id",
                           "message": f"No such {kind}: '{object_id}'"}}


def _one(call: Call, name: str) -> str | None:
    return (call.query.get(name) or [None])[0]


def _created_gte(call: Call) -> int | None:
    value = _one(call, "created[gte]")
    return int(value) if value else None


def _index(objects, object_id: str) -> int:
    if isinstance(objects, Generated):
        return objects.index(object_id)
    return next(i for i, o in enumerate(objects) if o["id"] == object_id)

def _public(endpoint: dict) -> dict:
    """The endpoint as Stripe shows it after creation: without its secret."""
    return {k: v for k, v in endpoint.items() if k != "secret"}
