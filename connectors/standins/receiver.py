"""A loopback receiver of the hub's outbound webhook: records each POST, checks its signature.

    with WebhookReceiver(secret="whk") as receiver:
        settings.OUTBOUND_WEBHOOK_URL = receiver.url + "/hooks"
        receiver.received  # JSON documents whose signature verified
"""
from __future__ import annotations

from connectors.webhook import verify
from connectors.standins.loopback import Call, LoopbackServer


class WebhookReceiver(LoopbackServer):
    ROUTES = [("POST", r"/hooks", "receive")]

    def __init__(self, secret: str = "whsec-test"):
        super().__init__()
        self.secret = secret
        self.received: list[dict] = []

    def error_body(self, status: int, message: str) -> dict:
        return {"error": message}

    def receive(self, call: Call):
        if not verify(self.secret, call.headers, call.raw):
            return 401, {"error": "bad signature"}
        self.received.append(call.body)
        return 200, {"ok": True}
