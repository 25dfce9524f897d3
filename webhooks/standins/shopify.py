"""A loopback stand-in of Shopify's Admin GraphQL endpoint (`/admin/api/<version>/graphql.json`).

It answers the subscription contract query in the shape of the Admin API (SubscriptionContract
fields as documented on shopify.dev), checks the access token like Shopify does (401), and
records every request so tests can look at what the hub sent.

    with FakeShopifyAdmin(token="shpat_test") as admin:
        settings.SHOPIFY_ADMIN_URL = admin.url
        ...
        admin.requests[0]["variables"]
"""
from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_PATH = re.compile(r"^/admin/api/(?P<version>[^/]+)/graphql\.json$")


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


class FakeShopifyAdmin:
    """Run with `with FakeShopifyAdmin() as admin:`; `admin.url` is the base to use as SHOPIFY_ADMIN_URL.

    - `contracts`: gid → node to answer (None answers `subscriptionContract: null`, as Shopify
      does for an id it will not show); ids not listed get `contract_node(gid)`.
    - `errors`: when set, every answer is `{"errors": errors}` with HTTP 200, as GraphQL errors are.
    - `requests`: one dict per request (path, version, headers, query, variables).
    """

    def __init__(self, token: str = "shpat_test"):
        self.token = token
        self.contracts: dict[str, dict | None] = {}
        self.errors: list[dict] | None = None
        self.requests: list[dict] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

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
        match = _PATH.match(path)
        if not match:
            return 404, {"errors": "Not Found"}
        self.requests.append({"path": path, "version": match["version"], "headers": headers,
                              "query": body.get("query", ""), "variables": body.get("variables") or {}})
        if headers.get("x-shopify-access-token") != self.token:
            return 401, {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}
        if self.errors:
            return 200, {"errors": self.errors}
        if "shop {" in body.get("query", "") and "subscriptionContract(" not in body.get("query", ""):
            return 200, {"data": {"shop": {"name": "Stand-in shop"}}}  # `hub install --check`
        if "subscriptionContract(" not in body.get("query", ""):
            return 200, {"errors": [{"message": "the stand-in only answers subscriptionContract"}]}
        gid = (body.get("variables") or {}).get("id", "")
        node = self.contracts[gid] if gid in self.contracts else contract_node(gid)
        cost = {"requestedQueryCost": 12, "actualQueryCost": 6,
                "throttleStatus": {"maximumAvailable": 2000.0, "currentlyAvailable": 1994, "restoreRate": 100.0}}
        return 200, {"data": {"subscriptionContract": node}, "extensions": {"cost": cost}}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                headers = {key.lower(): value for key, value in self.headers.items()}
                status, answer = fake.answer(self.path, headers, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep test output quiet
                pass

        return Handler
