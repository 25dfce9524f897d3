"""Outbound webhook: each delivery as a signed JSON POST to OUTBOUND_WEBHOOK_URL.

Signature: hex HMAC-SHA256 with OUTBOUND_WEBHOOK_SECRET over f"{timestamp}.{body}", sent as
`X-Hub-Signature` beside `X-Hub-Timestamp` (Unix seconds). A receiver recomputes it over the
raw body, rejects old timestamps (replays) and dedupes on `X-Hub-Delivery` (the idempotency key).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time

import requests

from connectors.base import Connector, Outgoing, Reply, Result


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of f"{timestamp}.{body}"."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: str, headers, body: bytes, tolerance: float = 300.0,
           now: float | None = None) -> bool:
    """What a receiver does: signature matches and the timestamp is recent."""
    timestamp = headers.get("X-Hub-Timestamp", "")
    if not timestamp.isdigit() or abs((now or time.time()) - int(timestamp)) > tolerance:
        return False
    expected = signature(secret, timestamp, body)
    return hmac.compare_digest(expected, headers.get("X-Hub-Signature", ""))


class WebhookConnector(Connector):
    name = "webhook"
    max_batch = 100
    settings_keys = ("OUTBOUND_WEBHOOK_URL", "OUTBOUND_WEBHOOK_SECRET")
    kinds = ("profile", "event", "consent")
    needs = ("email", "phone")
    options = {}
    timeout = 10.0
    transport_errors = (requests.RequestException,)
    request_id_header = "X-Request-Id"
    # The receiver's 429 delays that delivery only: the receiver is the merchant's own
    # endpoint, with no account-wide limit to keep for the other deliveries.
    pause_on_429 = False

    def __init__(self, settings, field_map=None, limiter=None):
        super().__init__(settings, field_map, limiter)
        self.mapping = self.field_map
        self.http = requests.Session()

    def close(self) -> None:
        self.http.close()

    def body(self, item: Outgoing) -> bytes:
        """The JSON document a receiver gets; profile fields under the mapped names."""
        payload = dict(item.payload)
        if item.kind == "profile":
            fields = self.mapping["fields"]
            payload["fields"] = {fields[k]: v for k, v in payload["fields"].items()
                                 if fields.get(k)}
        document = {"id": item.key, "kind": item.kind, "delivery_id": item.delivery_id,
                    "data": payload}
        return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()

    def push_batch(self, items: list[Outgoing]) -> dict[int, Result]:
        return self.one_by_one(items, self._post)

    def _post(self, item: Outgoing) -> Result:
        body = self.body(item)

        def send():
            # Signed once the rate limit lets the request go, so the timestamp is fresh.
            timestamp = str(int(time.time()))
            signed = signature(self.settings.OUTBOUND_WEBHOOK_SECRET, timestamp, body)
            headers = {"Content-Type": "application/json", "User-Agent": "subscription-hub",
                       "X-Hub-Timestamp": timestamp, "X-Hub-Delivery": item.key,
                       "X-Hub-Signature": signed}
            return self.http.post(self.settings.OUTBOUND_WEBHOOK_URL, data=body, headers=headers,
                                  timeout=self.timeout, allow_redirects=False)
        result, _ = self.call("post", send)
        return result

    def reply(self, answer) -> Reply:
        # A receiver's body is whatever it chose to say: kept as text, never parsed.
        ok = 200 <= answer.status_code < 300
        return Reply(answer.status_code, answer.headers, None if ok else answer.text)
