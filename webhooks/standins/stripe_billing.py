"""A loopback stand-in of the Stripe API calls the rule layer makes: billing-portal sessions
and paying an invoice, in Stripe's shapes (fixtures3.json objects), with Stripe's 401 for a
wrong key and its idempotency: a repeated Idempotency-Key gets the first answer again and
is not another attempt.

    with FakeStripeBilling("sk_test_1") as fake:
        settings.STRIPE_API_BASE, settings.STRIPE_API_KEY = fake.url, "sk_test_1"
        ...
        fake.attempts  # [(invoice id, idempotency key)], once per key
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from urllib.parse import parse_qs

from connectors.standins.loopback import Call, LoopbackServer, new_id

_FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "stripe" / "fixtures3.json"


def _resource(name: str) -> dict:
    try:
        return copy.deepcopy(json.loads(_FIXTURES.read_text())["resources"][name])
    except (OSError, KeyError, ValueError):
        return {"object": name}


class FakeStripeBilling(LoopbackServer):
    ROUTES = [("POST", r"/v1/billing_portal/sessions", "portal_session"),
              ("POST", r"/v1/invoices/(?P<invoice>[^/]+)/pay", "pay_invoice")]

    def __init__(self, key: str = "sk_test_standin"):
        super().__init__()
        self.key = key
        self.sessions: list[dict] = []
        self.attempts: list[tuple[str, str | None]] = []
        self.declines: set[str] = set()  # invoice ids whose payment the card declines
        self._answers: dict[str, tuple] = {}

    def authorized(self, call: Call) -> bool:
        return call.headers.get("Authorization") == f"Bearer {self.key}"

    def error_body(self, status: int, message: str) -> dict:
        return {"error": {"type": "invalid_request_error", "message": message}}

    @staticmethod
    def form(call: Call) -> dict:
        return {k: v[-1] for k, v in parse_qs(call.raw.decode()).items()}

    def portal_session(self, call: Call):
        params = self.form(call)
        if not params.get("customer"):
            return 400, self.error_body(400, "Missing required param: customer.")
        session = _resource("billing_portal.session")
        sid = f"bps_{new_id()}"
        session.update(id=sid, customer=params["customer"], return_url=params.get("return_url"),
                       created=int(time.time()), flow=None, url=f"{self.url}/p/session/{sid}")
        self.sessions.append(session)
        return 200, session

    def pay_invoice(self, call: Call):
        key = call.headers.get("Idempotency-Key")
        if key and key in self._answers:
            return self._answers[key]
        invoice_id = call.params["invoice"]
        self.attempts.append((invoice_id, key))
        invoice = _resource("invoice")
        invoice.update(id=invoice_id, attempted=True)
        if invoice_id in self.declines:
            answer = (402, {"error": {"type": "card_error", "code": "card_declined", "decline_code": "generic_decline",
                                      "message": "Your card was declined.", "invoice": invoice_id}})
        else:
            invoice.update(status="paid", paid=True)
            answer = (200, invoice)
        if key:
            self._answers[key] = answer
        return answer
