"""Consent drift against the tools' loopback stand-ins: the report finds the people a tool holds
otherwise than the source of truth, and `fix` pushes the source's consent through the outbox."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from connectors.ratelimit import Limiter
from hub.events import CONSENT_CHANGED, CanonicalEvent
from hub.models import DEAD, ConsentDrift, Delivery
from hub.ops import consent
from hub.sync import outbox
from hub.sync.apply import apply_event
from standins.klaviyo import FakeKlaviyo

UNSUBSCRIBE = "/api/profile-subscription-bulk-delete-jobs"


def consent_event(email: str, state: str, at: datetime | None = None, source: str = "shopify") -> CanonicalEvent:
    """Consent given or withdrawn at the source now (or at `at`)."""
    at = at or datetime.now(timezone.utc)
    return CanonicalEvent(name=CONSENT_CHANGED, source=source, occurred_at=at, customer={"email": email},
                          data={"channel": "email", "state": state, "consented_at": at})


def record(hub, *events: CanonicalEvent) -> None:
    """Apply consent events as the inbox drain does, planning their deliveries."""
    with hub.storage.session() as session:
        for one in events:
            changes = apply_event(session, one)
            outbox.plan(session, hub.settings, changes.subscriber, changes, [], one)


def push(hub, tool: str) -> dict:
    return outbox.push_batch(hub.storage, hub.settings, tool, now=datetime.now(timezone.utc) + timedelta(seconds=5),
                             limiter=Limiter())


def unsubscribed_emails(klaviyo: FakeKlaviyo, calls) -> list[str]:
    return [p["attributes"]["email"] for c in calls for p in c.body["data"]["attributes"]["profiles"]["data"]]


def test_klaviyo_still_subscribed_after_the_source_withdrew_is_found_and_fixed_once(hub):
    with FakeKlaviyo(api_key="pk_drift") as klaviyo:
        hub.settings = replace(hub.settings, KLAVIYO_API_KEY="pk_drift", KLAVIYO_BASE_URL=klaviyo.url)
        record(hub, *(consent_event(f"{name}@example.com", "subscribed") for name in ("ada", "bob", "cy")))
        assert push(hub, "klaviyo")["sent"] == 3
        record(hub, consent_event("cy@example.com", "unsubscribed"))
        assert push(hub, "klaviyo")["sent"] == 1  # Cy's withdrawal reached Klaviyo
        # Ada withdraws at Shopify; Klaviyo refuses that unsubscribe, so it dead-letters.
        withdrawn = consent_event("ada@example.com", "unsubscribed")
        record(hub, withdrawn)
        klaviyo.fail(400, path=UNSUBSCRIBE, times=1, message="Invalid input.")
        push(hub, "klaviyo")
        with hub.storage.session() as s:
            assert s.scalar(select(Delivery.status).where(Delivery.idempotency_key.like("%unsubscribed%"),
                                                          Delivery.subscriber_id == _id(s, "ada@example.com"))) == DEAD
        before = len(klaviyo.operations("bulk_unsubscribe_profiles"))

        report = consent.run(hub, limiter=Limiter())

        [tool] = report.tools
        assert (tool.connector, tool.read, tool.checked, tool.drifted, tool.still_subscribed, tool.error) == (
            "klaviyo", 3, 3, 1, 1, None)
        with hub.storage.session() as s:
            [drift] = s.scalars(select(ConsentDrift)).all()
            assert (drift.subscriber_id, drift.kind, drift.source, drift.source_state, drift.tool_state) == (
                _id(s, "ada@example.com"), "still_subscribed", "shopify", "unsubscribed", "subscribed")
            assert drift.source_at == withdrawn.occurred_at and drift.tool_since < drift.source_at
            assert drift.fix_delivery_id is None
        assert len(klaviyo.operations("bulk_unsubscribe_profiles")) == before  # a check sends nothing

        fixed = consent.run(hub, fix=True, limiter=Limiter())
        assert fixed.fixed == 1
        assert push(hub, "klaviyo")["sent"] == 1
        sent = klaviyo.operations("bulk_unsubscribe_profiles")[before:]
        assert unsubscribed_emails(klaviyo, sent) == ["ada@example.com"]
        assert klaviyo.consent[klaviyo.profile_id("ada@example.com")]["email"]["consent"] == "UNSUBSCRIBED"
        assert consent.run(hub, limiter=Limiter()).drifted == 0


def _id(session, email: str) -> int:
    return consent.source_consent(session)["email"][email].subscriber_id
