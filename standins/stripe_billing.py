"""A loopback stand-in of the Stripe API calls the hub makes: billing-portal sessions (and the
portal page a session's URL opens) and paying an invoice, in Stripe's shapes (its published
example objects, examples/stripe_resources.json), with Stripe's 401 for a wrong key and its
idempotency: a repeated Idempotency-Key gets the first answer again and is not another attempt.

    with FakeStripeBilling("sk_test_1") as fake:
        settings.STRIPE_API_BASE, settings.STRIPE_API_KEY = fake.url, "sk_test_1"
        ...
        fake.attempts  # [(invoice id, idempotency key)], once per key; a paid invoice is refused
        fake.clock += 14 * 86400  # two weeks later: every session URL made so far has expired
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from urllib.parse import parse_qs

from standins import EXAMPLES
from standins.loopback import Call, LoopbackServer, new_id

# "For security reasons, sessions are short-lived and will expire if the customer does not
# visit the URL. Create sessions on-demand" (https://docs.stripe.com/api/customer_portal/sessions/object);
# Stripe states no figure, integrations observe about five minutes.
SESSION_LIFETIME_S = 300

# Flow types and what each requires (https://stripe.com/docs/customer-management/portal-deep-links,
# https://docs.stripe.com/api/customer_portal/sessions/create#create_portal_session-flow_data):
# subscription_cancel / subscription_update name the subscription, the confirm flow also its items.
FLOW_REQUIRES = {"payment_method_update": (), "subscription_cancel": ("[subscription_cancel][subscription]",),
                 "subscription_update": ("[subscription_update][subscription]",),
                 "subscription_update_confirm": ("[subscription_update_confirm][subscription]",
                                                 "[subscription_update_confirm][items][0][id]")}


def _resource(examples: Path, name: str) -> dict:
    """One of Stripe's published example objects (examples/README.md), or a bare one without them."""
    try:
        return copy.deepcopy(json.loads(examples.read_text())[name])
    except (OSError, KeyError, ValueError):
        return {"object": name}


class FakeStripeBilling(LoopbackServer):
    ROUTES = [("POST", r"/v1/billing_portal/sessions", "portal_session"),
              ("GET", r"/p/session/(?P<session>[^/]+)", "portal_page"),
              ("POST", r"/v1/invoices/(?P<invoice>[^/]+)/pay", "pay_invoice")]

    def __init__(self, key: str = "sk_test_standin", examples: Path = EXAMPLES):
        super().__init__()
        self.key = key
        self.examples = examples
        self.sessions: list[dict] = []
        self.attempts: list[tuple[str, str | None]] = []
        self.declines: set[str] = set()  # invoice ids whose payment the card declines
        # invoice id → its decline's decline_code (default generic_decline) and advice_code
        self.decline_codes: dict[str, str] = {}
        self.advice_codes: dict[str, str] = {}
        self.paid: set[str] = set()  # invoice ids paid through pay_invoice
        self._answers: dict[str, tuple] = {}
        self.clock = time.time()  # the stand-in's "now"; a test moves it forward
        self.visited: set[str] = set()  # session ids opened in time (they stay open)

    def authorized(self, call: Call) -> bool:
        # The portal page is opened by the customer's browser, which holds no API key.
        return call.path.startswith("/p/session/") or call.headers.get("Authorization") == f"Bearer {self.key}"

    def error_body(self, status: int, message: str) -> dict:
        return {"error": {"type": "invalid_request_error", "message": message}}

    @staticmethod
    def form(call: Call) -> dict:
        return {k: v[-1] for k, v in parse_qs(call.raw.decode()).items()}

    def portal_session(self, call: Call):
        params = self.form(call)
        if not params.get("customer"):
            return 400, self.error_body(400, "Missing required param: customer.")
        flow = None
        if "flow_data[type]" in params:
            kind = params["flow_data[type]"]
            if kind not in FLOW_REQUIRES:
                return 400, self.error_body(400, f"Invalid flow_data[type]: must be one of {', '.join(FLOW_REQUIRES)}.")
            missing = [f"flow_data{p}" for p in FLOW_REQUIRES[kind] if not params.get(f"flow_data{p}")]
            if missing:
                return 400, self.error_body(400, f"Missing required param: {missing[0]}.")
            flow = {"type": kind, "after_completion": {"type": params.get("flow_data[after_completion][type]",
                                                                          "portal_homepage")}}
            for part in ("subscription_cancel", "subscription_update"):
                flow[part] = {"subscription": params[f"flow_data[{part}][subscription]"]} if kind == part else None
        session = _resource(self.examples, "billing_portal.session")
        sid = f"bps_{new_id()}"
        session.update(id=sid, customer=params["customer"], return_url=params.get("return_url"),
                       created=int(self.clock), flow=flow, url=f"{self.url}/p/session/{sid}")
        self.sessions.append(session)
        return 200, session

    def portal_page(self, call: Call):
        """What the customer's browser gets at a session URL: the portal, or an error once expired."""
        session = next((s for s in self.sessions if s["id"] == call.params["session"]), None)
        if session is None or (session["id"] not in self.visited
                               and self.clock - session["created"] > SESSION_LIFETIME_S):
            return 404, self.error_body(
                404, "This customer portal session has expired. Return to the site to start over.")
        self.visited.add(session["id"])
        flow = session["flow"] or {}
        return 200, {"object": "portal_page", "customer": session["customer"], "flow": flow.get("type"),
                     "can_update_payment_method": flow.get("type") in (None, "payment_method_update")}

    def pay_invoice(self, call: Call):
        key = call.headers.get("Idempotency-Key")
        if key and key in self._answers:
            return self._answers[key]
        invoice_id = call.params["invoice"]
        if invoice_id in self.paid:
            # Stripe refuses to pay an invoice twice: 400 invalid_request_error "Invoice is
            # already paid" (as integrations record it, e.g. github.com/twentyhq/twenty/pull/22705).
            answer = (400, self.error_body(400, "Invoice is already paid"))
            if key:
                self._answers[key] = answer
            return answer
        self.attempts.append((invoice_id, key))
        invoice = _resource(self.examples, "invoice")
        invoice.update(id=invoice_id, attempted=True)
        if invoice_id in self.declines:
            # A card_error names the issuer's decline_code and, for some, an advice_code
            # (https://docs.stripe.com/declines/codes, https://docs.stripe.com/declines/card#retrying-issuer-declines);
            # the message stays the generic one (Stripe does not tell a customer "lost card").
            error = {"type": "card_error", "code": "card_declined",
                     "decline_code": self.decline_codes.get(invoice_id, "generic_decline"),
                     "message": "Your card was declined.", "invoice": invoice_id}
            if invoice_id in self.advice_codes:
                error["advice_code"] = self.advice_codes[invoice_id]
            answer = (402, {"error": error})
        else:
            invoice.update(status="paid", paid=True)
            self.paid.add(invoice_id)
            answer = (200, invoice)
        if key:
            self._answers[key] = answer
        return answer
