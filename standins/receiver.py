"""A loopback receiver of the hub's outbound webhook: records each POST, checks its signature.

    with WebhookReceiver(secret="whk") as receiver:
        settings.OUTBOUND_WEBHOOK_URL = receiver.url + "/hooks"
        receiver.received  # JSON documents whose signature verified

It checks as a receiver written from docs/connectors.md would, not with the hub's own code:
`X-Hub-Signature` is the hex HMAC-SHA256 of "{X-Hub-Timestamp}.{raw body}" with the shared
secret, and a timestamp more than five minutes away is a replay.
"""
from __future__ import annotations

import hashlib
import hmac
import time

from standins.loopback import Call, LoopbackServer

TOLERANCE_S = 300


class WebhookReceiver(LoopbackServer):
    ROUTES = [("POST", r"/hooks", "receive")]

    def __init__(self, secret: str = "whsec-test"):
        super().__init__()
        self.secret = secret
        self.received: list[dict] = []

    def error_body(self, status: int, message: str) -> dict:
        return {"error": message}

    def signed(self, call: Call) -> bool:
        timestamp = call.headers.get("X-Hub-Timestamp", "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TOLERANCE_S:
            return False
        expected = hmac.new(self.secret.encode(), f"{timestamp}.".encode() + call.raw, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, call.headers.get("X-Hub-Signature", ""))

    def receive(self, call: Call):
        if not self.signed(call):
            return 401, {"error": "bad signature"}
        self.received.append(call.body)
        return 200, {"ok": True}
