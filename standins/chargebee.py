"""A loopback stand-in of Chargebee's list APIs (`GET /api/v2/customers|subscriptions|invoices`),
of the customer pages the hub's links open: portal sessions (`POST /api/v2/portal_sessions`)
and the manage-payment-sources hosted page, each with the URL the customer's browser opens,
and of collecting an unpaid invoice now (`POST /api/v2/invoices/{id}/collect_payment`, with
Chargebee's `chargebee-idempotency-key`).

It speaks Chargebee's shapes: HTTP basic auth with the API key as user (401 with
Chargebee's error document otherwise), `{"list": [{"customer": {...}}, ...], "next_offset": "…"}`
paged with `limit` (at most 100) and an opaque `offset`, `sort_by[asc]=updated_at` and
`updated_at[after]` filters, and 429 past `rate_per_minute` API requests in any minute
(Chargebee's per-site limit), with no Retry-After.

    with FakeChargebee(api_key="test_key") as cb:
        settings.CHARGEBEE_API_BASE = cb.url
        cb.customers.append({"id": "cust_1", "email": ..., "updated_at": 1700000000, ...})
        cb.subscriptions.append({"subscription": {...}, "customer": {...}})  # list entries
        cb.clock += 14 * 86400  # later: portal access URLs and hosted pages made so far have expired
        cb.invoices.append({"id": "1057", "status": "payment_due", "amount_due": 4700, ...})
        cb.declines.add("1057")  # its next collection is declined
        cb.attempts  # [(invoice id, idempotency key)]: charges actually attempted
"""
from __future__ import annotations

import base64
import time
from urllib.parse import parse_qs

from standins.loopback import Call, LoopbackServer, RollingLimit, new_id

# "The access URL should be accessed by the customer within one hour from the time it was
# created ... Once accessed, the access url cannot be reused"
# (https://apidocs.chargebee.com/docs/api/portal_sessions).
# Pages the customer's browser opens (no API key, no API request).
BROWSER_PATHS = ("/portal/access/", "/pages/v3/")
PORTAL_ACCESS_S = 3600
# A hosted page carries its own `expires_at` (https://apidocs.chargebee.com/docs/api/hosted_pages);
# the docs give no default, the stand-in keeps it three days.
HOSTED_PAGE_S = 3 * 86400

# "To make an idempotent request in Chargebee, provide the chargebee-idempotency-key header ...
# If there is a record, Chargebee returns the response for that record with a response header
# chargebee-idempotency-replayed set to true ... Idempotency keys can be upto 100 characters in
# length ... an idempotency window of 30 minutes"
# (https://apidocs.chargebee.com/docs/api/v1/idempotency?prod_cat_ver=1, the same for API v2).
IDEMPOTENCY_HEADER = "chargebee-idempotency-key"
IDEMPOTENCY_KEY_MAX = 100
IDEMPOTENCY_WINDOW_S = 30 * 60
# "This API is used to collect payments for payment_due and not_paid invoices"; the newer page
# adds posted (https://apidocs.chargebee.com/docs/api/v2/pcv-1/invoices/collect-payment-for-an-invoice,
# https://apidocs.chargebee.com/docs/api/invoices/collect-payment-for-an-invoice).
COLLECTABLE = ("payment_due", "not_paid", "posted")


class FakeChargebee(LoopbackServer):
    """One Chargebee site; `api_key` is the only key it accepts."""

    ROUTES = [
        ("GET", r"/api/v2/customers", "list_customers"),
        ("GET", r"/api/v2/subscriptions", "list_subscriptions"),
        ("GET", r"/api/v2/subscriptions/(?P<id>[^/]+)/retrieve_with_scheduled_changes", "with_scheduled_changes"),
        ("GET", r"/api/v2/invoices", "list_invoices"),
        ("POST", r"/api/v2/portal_sessions", "create_portal_session"),
        ("POST", r"/api/v2/hosted_pages/manage_payment_sources", "manage_payment_sources"),
        ("POST", r"/api/v2/invoices/(?P<invoice>[^/]+)/collect_payment", "collect_payment"),
        ("GET", r"/portal/access/(?P<token>[^/]+)", "open_portal"),
        ("GET", r"/pages/v3/(?P<page>[^/]+)/?", "open_hosted_page"),
    ]

    def __init__(self, api_key: str = "test_standin_key", rate_per_minute: int | None = None):
        super().__init__()
        self.api_key = api_key
        self.limit = RollingLimit(rate_per_minute, 60.0) if rate_per_minute else None
        # Resources as the list APIs return them: customers and invoices are the bare
        # resources; subscriptions are whole list entries ({"subscription", "customer", "card"}).
        self.customers: list[dict] = []
        self.subscriptions: list[dict] = []
        self.invoices: list[dict] = []
        # subscription id -> the subscription as its scheduled changes make it (changes_scheduled_at set)
        self.scheduled: dict[str, dict] = {}
        self.clock = time.time()  # the stand-in's "now"; a test moves it forward
        self.portal_sessions: list[dict] = []
        self.hosted_pages: list[dict] = []
        self.declines: set[str] = set()  # invoice ids whose next collection the gateway declines
        self.attempts: list[tuple[str, str | None]] = []
        self._replays: dict[str, tuple[float, tuple]] = {}  # idempotency key -> (when, answer)

    def authorized(self, call: Call) -> bool:
        if call.path.startswith(BROWSER_PATHS):
            return True  # opened by the customer's browser, which holds no API key
        expected = "Basic " + base64.b64encode(f"{self.api_key}:".encode()).decode()
        return call.headers.get("Authorization") == expected

    def error_body(self, status: int, message: str) -> dict:
        if status == 401:
            return {"message": "Sorry, authentication failed. Invalid api key",
                    "type": "invalid_request", "api_error_code": "api_authentication_failed",
                    "error_code": "api_authentication_invalid_key", "http_status_code": 401}
        if status == 429:
            return {"message": "Sorry, access has been blocked temporarily due to request count "
                               "exceeding acceptable limits.", "api_error_code": "api_request_limit_exceeded",
                    "http_status_code": 429}
        return {"message": message, "http_status_code": status}

    def list_customers(self, call: Call):
        return self._listing(call, [{"customer": c} for c in self.customers], "customer")

    def list_subscriptions(self, call: Call):
        return self._listing(call, self.subscriptions, "subscription")

    def with_scheduled_changes(self, call: Call):
        """GET /api/v2/subscriptions/{id}/retrieve_with_scheduled_changes: "the subscription
        resource with the scheduled change applied" ({"subscription": ...}). Chargebee's docs do
        not say what it answers for one without scheduled changes; the stand-in answers it as it is."""
        sub_id = call.params["id"]
        current = next((e["subscription"] for e in self.subscriptions if e["subscription"]["id"] == sub_id), None)
        if current is None:
            return 404, {"message": f"Sorry, we couldn't find that resource ({sub_id}).",
                         "type": "invalid_request", "api_error_code": "resource_not_found", "http_status_code": 404}
        return 200, {"subscription": self.scheduled.get(sub_id, current)}

    def list_invoices(self, call: Call):
        return self._listing(call, [{"invoice": i} for i in self.invoices], "invoice")

    @property
    def throttled(self) -> int:
        """API requests refused with 429 for the per-minute limit."""
        return self.limit.throttled if self.limit else 0

    def rate_limit_wait(self, call: Call) -> float:
        # The customer's browser opening a portal or hosted page makes no API request.
        return 0.0 if call.path.startswith(BROWSER_PATHS) else super().rate_limit_wait(call)

    def refusal(self, wait: float) -> tuple[int, object, dict]:
        # Chargebee documents the refusal's body, not a Retry-After: it serves no more
        # requests "until the limit resets (in approximately a minute)"
        # (https://apidocs.chargebee.com/docs/api/error-handling,
        # https://support.chargebee.com/support/solutions/articles/250853). None is sent.
        return 429, self.error_body(429, ""), {}

    def _listing(self, call: Call, entries: list[dict], key: str):
        limit = min(100, max(1, int(_one(call, "limit") or 10)))
        offset = int(_one(call, "offset") or 0)
        after = _one(call, "updated_at[after]")
        kept = [e for e in entries if after is None or e[key]["updated_at"] > int(after)]
        if _one(call, "sort_by[asc]") == "updated_at":
            kept.sort(key=lambda e: (e[key]["updated_at"], e[key]["id"]))
        data = kept[offset:offset + limit]
        answer = {"list": data}
        if offset + limit < len(kept):
            # Chargebee's offsets are opaque strings; this one is a position in the sorted list.
            answer["next_offset"] = f'["{offset + limit}"]'
        return 200, answer


    # Customer pages ------------------------------------------------------------------

    def _customer(self, call: Call) -> tuple[str | None, dict]:
        form = {k: v[-1] for k, v in parse_qs(call.raw.decode()).items()}
        return form.get("customer[id]"), form

    def _missing_customer(self):
        return 400, {"message": "customer[id] : cannot be blank", "type": "invalid_request",
                     "api_error_code": "param_wrong_value", "param": "customer[id]", "http_status_code": 400}

    def create_portal_session(self, call: Call):
        customer, form = self._customer(call)
        if not customer:
            return self._missing_customer()
        token = f"__test__{new_id()}"
        session = {"id": f"portal_{new_id()}", "token": token, "object": "portal_session",
                   "access_url": f"{self.url}/portal/access/{token}", "status": "created",
                   "customer_id": customer, "redirect_url": form.get("redirect_url"),
                   "created_at": int(self.clock), "expires_at": int(self.clock) + PORTAL_ACCESS_S}
        self.portal_sessions.append(session)
        return 200, {"portal_session": session}

    def manage_payment_sources(self, call: Call):
        customer, form = self._customer(call)
        if not customer:
            return self._missing_customer()
        page_id = new_id()
        page = {"id": page_id, "type": "manage_payment_sources", "state": "created", "embed": False,
                "object": "hosted_page", "url": f"{self.url}/pages/v3/{page_id}/",
                "created_at": int(self.clock), "expires_at": int(self.clock) + HOSTED_PAGE_S,
                "customer_id": customer, "redirect_url": form.get("redirect_url")}
        self.hosted_pages.append(page)
        return 200, {"hosted_page": {k: v for k, v in page.items() if k not in ("customer_id", "redirect_url")}}

    # Collecting an invoice -----------------------------------------------------------

    def collect_payment(self, call: Call):
        key = next((v for k, v in call.headers.items() if k.lower() == IDEMPOTENCY_HEADER), None)
        if key is not None and not 0 < len(key) <= IDEMPOTENCY_KEY_MAX:
            return 400, {"message": f"{IDEMPOTENCY_HEADER} : length must be 1 to {IDEMPOTENCY_KEY_MAX}",
                         "type": "invalid_request", "api_error_code": "param_wrong_value",
                         "http_status_code": 400}
        if key in self._replays and self.clock - self._replays[key][0] <= IDEMPOTENCY_WINDOW_S:
            status, document = self._replays[key][1]
            return status, document, {"chargebee-idempotency-replayed": "true"}
        answer = self._collect(call.params["invoice"], key)
        if key is not None:
            self._replays[key] = (self.clock, answer)
        return answer

    def _collect(self, invoice_id: str, key: str | None) -> tuple:
        invoice = next((i for i in self.invoices if i["id"] == invoice_id), None)
        if invoice is None:
            return 404, {"message": f"Sorry, we couldn't find that resource ({invoice_id}).",
                         "type": "invalid_request", "api_error_code": "resource_not_found",
                         "http_status_code": 404}
        if invoice.get("status") not in COLLECTABLE or not invoice.get("amount_due"):
            return 400, {"message": f"The invoice is in {invoice.get('status')} state; payment cannot be "
                                    "collected.", "type": "invalid_request",
                         "api_error_code": "invalid_state_for_request", "http_status_code": 400}
        self.attempts.append((invoice_id, key))
        if invoice_id in self.declines:
            # A declined charge: HTTP 400, type `payment`, api_error_code payment_processing_failed
            # (https://apidocs.chargebee.com/docs/api/error-handling?prod_cat_ver=2).
            return 400, {"message": "Payment cannot be collected. Error message: (card_declined) Your card "
                                    "was declined.", "type": "payment",
                         "api_error_code": "payment_processing_failed",
                         "error_cause_id": "gateway.general.decline", "http_status_code": 400}
        amount = invoice["amount_due"]
        invoice.update(status="paid", amount_paid=(invoice.get("amount_paid") or 0) + amount, amount_due=0,
                       paid_at=int(self.clock), updated_at=int(self.clock))
        txn = {"id": f"txn_{new_id()}", "object": "transaction", "type": "payment", "status": "success",
               "amount": amount, "currency_code": invoice.get("currency_code"), "date": int(self.clock),
               "customer_id": invoice.get("customer_id"),
               "linked_invoices": [{"invoice_id": invoice_id, "applied_amount": amount}]}
        return 200, {"invoice": dict(invoice), "transaction": txn}

    def open_portal(self, call: Call):
        session = next((s for s in self.portal_sessions if s["token"] == call.params["token"]), None)
        if session is None or session["status"] != "created" or self.clock > session["expires_at"]:
            return 404, {"message": "This link has expired or has already been used."}
        session["status"] = "logged_in"
        return 200, {"page": "portal", "customer": session["customer_id"]}

    def open_hosted_page(self, call: Call):
        page = next((p for p in self.hosted_pages if p["id"] == call.params["page"]), None)
        if page is None or self.clock > page["expires_at"]:
            return 404, {"message": "This page has expired."}
        return 200, {"page": page["type"], "customer": page["customer_id"]}


def _one(call: Call, name: str) -> str | None:
    value = (call.query.get(name) or [None])[0]
    if name == "offset" and value:
        return value.strip('[]"')
    return value
