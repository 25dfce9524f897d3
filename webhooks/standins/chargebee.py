"""A loopback stand-in of Chargebee's list APIs (`GET /api/v2/customers|subscriptions|invoices`).

It speaks Chargebee's shapes: HTTP basic auth with the API key as user (401 with
Chargebee's error document otherwise), `{"list": [{"customer": {...}}, ...], "next_offset": "…"}`
paged with `limit` (at most 100) and an opaque `offset`, `sort_by[asc]=updated_at` and
`updated_at[after]` filters, and 429 above `rate_per_minute` (Chargebee's per-site limit).

    with FakeChargebee(api_key="test_key") as cb:
        settings.CHARGEBEE_API_BASE = cb.url
        cb.customers.append({"id": "cust_1", "email": ..., "updated_at": 1700000000, ...})
        cb.subscriptions.append({"subscription": {...}, "customer": {...}})  # list entries
"""
from __future__ import annotations

import base64
import time

from connectors.standins.loopback import Call, LoopbackServer


class FakeChargebee(LoopbackServer):
    """One Chargebee site; `api_key` is the only key it accepts."""

    ROUTES = [
        ("GET", r"/api/v2/customers", "list_customers"),
        ("GET", r"/api/v2/subscriptions", "list_subscriptions"),
        ("GET", r"/api/v2/invoices", "list_invoices"),
    ]

    def __init__(self, api_key: str = "test_standin_key"):
        super().__init__()
        self.api_key = api_key
        # Resources as the list APIs return them: customers and invoices are the bare
        # resources; subscriptions are whole list entries ({"subscription", "customer", "card"}).
        self.customers: list[dict] = []
        self.subscriptions: list[dict] = []
        self.invoices: list[dict] = []
        self.rate_per_minute: int | None = None
        self._window: list[float] = []
        self.throttled = 0

    def authorized(self, call: Call) -> bool:
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

    def list_invoices(self, call: Call):
        return self._listing(call, [{"invoice": i} for i in self.invoices], "invoice")

    def _listing(self, call: Call, entries: list[dict], key: str):
        if self.rate_per_minute:
            now = time.monotonic()
            self._window = [t for t in self._window if now - t < 60.0]
            if len(self._window) >= self.rate_per_minute:
                self.throttled += 1
                wait = 60.0 - (now - self._window[0])
                return 429, self.error_body(429, ""), {"Retry-After": f"{max(1, int(wait + 0.999))}"}
            self._window.append(now)
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


def _one(call: Call, name: str) -> str | None:
    value = (call.query.get(name) or [None])[0]
    if name == "offset" and value:
        return value.strip('[]"')
    return value
