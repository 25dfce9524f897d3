"""Staff alerts: what arrives at a Slack-compatible incoming webhook, and what never arrives
twice within the hour, restarts included."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import update

from hub import jobs
from hub.models import ConsentDrift, Delivery, DeliveryAttempt, InboxEvent, Payment, Subscriber, Subscription
from hub.ops import alerts, consent
from hub.ops.backfill import save_checkpoint
from hub.schedule import schedule
from standins.slack import SlackWebhook
from tests.hub.sync.rules.test_orchestrate import orchestrate  # noqa: F401 - the fixture

NOW = datetime(2026, 12, 5, 1, 30, tzinfo=timezone.utc)  # before the digest hour (8 UTC)


@pytest.fixture
def slack(hub):
    with SlackWebhook() as receiver:
        hub.settings.HUB_ALERT_WEBHOOK_URL = receiver.url + "/services/T0/B0/alertsecret"
        yield receiver


def run(hub, at=NOW):
    return alerts.run(hub.storage, hub.settings, now=at)


def add_deliveries(hub, connector: str, outcomes: list[str], at: datetime, status: str = "dead") -> None:
    """One delivery per outcome, each with one attempt of that outcome at `at`."""
    with hub.storage.session() as s:
        for n, outcome in enumerate(outcomes):
            d = Delivery(connector=connector, kind="profile", subscriber_id=None, payload={},
                         idempotency_key=f"t:{connector}:{at.isoformat()}:{n}:{outcome}",
                         status=status if outcome != "sent" else "sent", attempts=1)
            s.add(d)
            s.flush()
            s.add(DeliveryAttempt(delivery_id=d.id, at=at, outcome=outcome, http_status=500, latency_ms=5))


def add_webhooks(hub, source: str, times: list[datetime], status: str = "processed") -> None:
    with hub.storage.session() as s:
        for n, at in enumerate(times):
            s.add(InboxEvent(source=source, event_id=f"{source}-{at.timestamp()}-{n}", topic="t", headers={},
                             body=b"{}", received_at=at, status=status, attempts=1, outcome=[], origin="webhook"))


def test_dead_letters_alert_once_an_hour_even_across_restarts(hub, slack):
    add_deliveries(hub, "klaviyo", ["failed"] * 3, NOW - timedelta(minutes=10))
    assert run(hub) == ["dead:klaviyo"]
    [text] = slack.messages
    assert text.startswith(":warning: klaviyo: 3 deliveries gave up after every retry (3 dead in all).")
    assert "/sync-log/deliveries?status=dead&connector=klaviyo" in text
    assert "alertsecret" not in text

    add_deliveries(hub, "klaviyo", ["failed"], NOW + timedelta(minutes=5))
    assert run(hub, NOW + timedelta(minutes=10)) == []  # within the hour: held back
    hub.storage.dispose()  # a restarted worker reads what was sent from the database
    assert run(hub, NOW + timedelta(minutes=15)) == []
    assert run(hub, NOW + timedelta(minutes=61)) == ["dead:klaviyo"]
    assert slack.messages[1].startswith(":warning: klaviyo: 1 delivery gave up after every retry (4 dead in all).")
    assert run(hub, NOW + timedelta(minutes=130)) == []  # nothing new died


def test_a_tools_error_rate_above_the_threshold_alerts(hub, slack):
    add_deliveries(hub, "hubspot", ["sent"] * 8 + ["retry"] * 2, NOW - timedelta(minutes=20), status="retrying")
    add_deliveries(hub, "klaviyo", ["sent"] * 9 + ["retry"], NOW - timedelta(minutes=20), status="retrying")
    add_deliveries(hub, "activecampaign", ["retry"] * 5, NOW - timedelta(minutes=20), status="retrying")
    assert run(hub) == ["error_rate:hubspot"]  # 20 %; klaviyo 10 %; activecampaign too few calls
    assert slack.messages == [
        ":warning: hubspot: 2 of 10 calls in the last hour failed (20 %, alert at 20 %). The sync log says what "
        f"it answered: {hub.settings.HUB_BASE_URL}/sync-log/deliveries?connector=hubspot"]


def test_failed_events_piling_up_alert(hub, slack):
    add_webhooks(hub, "shopify", [NOW - timedelta(minutes=n) for n in range(9)], status="failed")
    assert run(hub) == []
    add_webhooks(hub, "shopify", [NOW - timedelta(minutes=30)], status="failed")
    assert run(hub) == ["failed_events"]
    assert slack.messages[0].startswith(":warning: 10 inbound events failed to process (alert at 10). "
                                        "Fix the cause, then replay them:")


def test_failed_events_waiting_for_their_platform_are_said_to_need_no_replay(hub, slack):
    add_webhooks(hub, "stripe", [NOW - timedelta(minutes=n) for n in range(10)], status="failed")
    with hub.storage.session() as s:
        s.execute(update(InboxEvent).where(InboxEvent.id <= 4).values(retry_at=NOW + timedelta(minutes=2)))
    assert run(hub) == ["failed_events"]
    assert slack.messages[0].startswith(
        ":warning: 10 inbound events failed to process (alert at 10). 4 of them wait for their platform to "
        "answer: the hub tries those again by itself. Fix the cause of the others, then replay them:")


def test_a_platform_silent_for_longer_than_usual_alerts(hub, slack):
    last = NOW - timedelta(hours=2)
    add_webhooks(hub, "stripe", [last - timedelta(minutes=10 * n) for n in range(20)])  # every 10 minutes
    add_webhooks(hub, "chargebee", [NOW - timedelta(hours=3 * n) for n in range(1, 20)])  # every 3 hours
    assert run(hub) == ["silence:stripe"]
    assert slack.messages == [":warning: No webhook from stripe for 2 h (usually one every 10 min or sooner). "
                              f"Check its webhook registration: {hub.settings.HUB_BASE_URL}/sync-log/dashboard"]
    assert run(hub, NOW + timedelta(minutes=30)) == []
    hub.settings.STRIPE_WEBHOOK_SECRET = ""  # a platform the hub no longer takes webhooks from
    assert run(hub, NOW + timedelta(hours=2)) == []


def test_the_daily_digest_comes_once_a_day_from_its_hour(hub, slack):
    at = NOW.replace(hour=9)
    with hub.storage.session() as s:
        for n in range(3):
            s.add(Subscriber(email=f"p{n}@example.com", created_at=at - timedelta(hours=n + 1),
                             first_seen_at=at - timedelta(hours=n + 1)))
        s.add(Subscriber(email="old@example.com", created_at=at - timedelta(days=3),
                         first_seen_at=at - timedelta(days=3)))
        s.add(Subscription(source="stripe", source_id="sub_gone", status="canceled",
                           canceled_at=at - timedelta(hours=5), started_at=at - timedelta(days=90),
                           interval_count=1, quantity=1,
                           cancel_at_period_end=False, product_ids=[]))
        s.add(Payment(source="stripe", source_id="in_back", status="succeeded", amount=2900, currency="usd",
                      attempt_count=2, first_failed_at=at - timedelta(days=3), paid_at=at - timedelta(hours=2)))
        s.add(Payment(source="stripe", source_id="in_fine", status="succeeded", amount=5000, currency="usd",
                      attempt_count=1, paid_at=at - timedelta(hours=2)))
    assert run(hub, at.replace(hour=7)) == []  # before HUB_ALERT_DIGEST_HOUR
    assert run(hub, at) == ["digest"]
    assert slack.messages[0].splitlines() == [
        "Daily digest, the 24 hours to 05 Dec 2026, 09:30 UTC:", "• new subscribers: 3",
        "• subscriptions cancelled: 1", "• revenue recovered from failed payments: 29.00 USD",
        f"Dashboard: {hub.settings.HUB_BASE_URL}/sync-log/dashboard"]
    assert run(hub, at + timedelta(hours=5)) == []  # once a day
    assert run(hub, at + timedelta(days=1)) == ["digest"]


def test_the_digest_counts_the_last_consent_drift_report(hub, slack):
    at = NOW.replace(hour=9)
    with hub.storage.session() as s:
        for n, kind in enumerate([consent.STILL_SUBSCRIBED, consent.NOT_SUBSCRIBED, consent.STILL_SUBSCRIBED]):
            s.add(ConsentDrift(subscriber_id=n + 1, connector="klaviyo", channel="email", kind=kind,
                               source="shopify", source_state="unsubscribed", tool_state="subscribed"))
        save_checkpoint(s, consent.CHECKPOINT, {"checked_at": (at - timedelta(hours=6)).isoformat(), "tools": {}})
        s.commit()
    assert run(hub, at) == ["digest"]
    assert ("• consents that differ between platform and tools: 3 (2 withdrawn but still subscribed in a tool)"
            in slack.messages[0].splitlines())


def test_the_digest_names_a_platform_retrying_beside_the_hubs_orchestrated_retries(orchestrate, slack):
    hub, at = orchestrate, NOW.replace(hour=9)
    hub.settings.STRIPE_API_KEY = "sk_test_digest"
    with hub.storage.session() as s:
        for n in range(2):  # Stripe's own retries announced on two open failed invoices
            s.add(Payment(source="stripe", source_id=f"in_open{n}", status="failed", amount=2900, currency="usd",
                          attempt_count=1, first_failed_at=at - timedelta(days=2),
                          next_retry_at=at + timedelta(days=n + 1)))
        s.commit()
    assert run(hub, at) == ["digest"]
    assert ("• Stripe retries 2 failed payments on its own schedule too, beside the hub's orchestrated retries: "
            "turn its retries off (Billing → Revenue recovery → Retries)") in slack.messages[0].splitlines()


def test_an_alert_the_receiver_refused_is_sent_at_the_next_run(hub, slack):
    add_deliveries(hub, "klaviyo", ["failed"], NOW - timedelta(minutes=1))
    slack.fail(500, message="rollup_error", times=1)
    assert run(hub) == []
    assert run(hub, NOW + timedelta(minutes=5)) == ["dead:klaviyo"]
    assert len(slack.messages) == 1


def test_no_url_no_alerts_and_no_cron_entry(hub):
    add_deliveries(hub, "klaviyo", ["failed"], NOW - timedelta(minutes=1))
    assert run(hub) == []
    assert all(func.__name__ != "alerts_job" for func, _, _ in schedule(hub.settings))
    hub.settings.HUB_ALERT_WEBHOOK_URL = "http://127.0.0.1:9/services/a/b/c"
    assert [when for func, _, when in schedule(hub.settings) if func.__name__ == "alerts_job"] == [{"interval": 300}]


def test_the_cron_job_sends_what_is_due_now(hub, slack):
    add_deliveries(hub, "hubspot", ["failed"], datetime.now(timezone.utc) - timedelta(minutes=2))
    assert jobs.alerts_job()["sent"][0] == "dead:hubspot"
    assert slack.messages[0].startswith(":warning: hubspot: 1 delivery gave up")
