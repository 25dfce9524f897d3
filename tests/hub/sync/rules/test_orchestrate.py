"""Dunning mode `orchestrate`: on each retry day the hub asks the platform to retry (Stripe
Invoice.pay, Shopify subscriptionBillingAttemptCreate), once per due date, against stand-ins."""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta, timezone

import pytest
import yaml
from sqlalchemy import select

from hub import jobs
from hub.jobs import run_time_rules
from hub.models import Payment, RetryAsk, Trigger
from hub.ops import dashboard
from hub.sync import retries, rules
from hub.sync.inbox import drain_inbox
from hub.sync.rules import params as params_
from standins.shopify import INTERNAL_ERROR
from standins.shopify_billing import FakeShopifyBilling
from standins.stripe_billing import FakeStripeBilling
from tests.hub.sync.rules.conftest import shopify_billing_failure
from tests.hub.web.conftest import add_staff, log_in
from tests.hub.web.test_synclog import visible_text
from tests.samples import SAMPLE_CONTRACT, load_sample, post, stripe_event

# Stripe's invoice.payment_failed sample (customer cus_1234), and the day it failed.
INVOICE = load_sample("shared:stripe/pay/invoice.payment_failed.json")["object"]
FAILED_ON = datetime.fromtimestamp(INVOICE["created"], timezone.utc).date()


@pytest.fixture
def orchestrate(hub, tmp_path):
    folder = tmp_path / "mappings"
    folder.mkdir()
    data = yaml.safe_load(params_.DEFAULT_PATH.read_text())
    data["dunning"]["mode"] = "orchestrate"
    (folder / "rules.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    hub.settings.HUB_MAPPINGS_DIR = str(folder)
    yield hub


def sweep_days(hub, first: date, count: int, times: int = 2) -> dict:
    """`hub sweep --at` every simulated morning, `times` times; fired counts by day."""
    fired = {}
    for i in range(count):
        day = first + timedelta(days=i)
        for _ in range(times):
            counts = run_time_rules(hub, datetime.combine(day, time(6), tzinfo=timezone.utc))
            if counts.get("dunning"):
                fired[day.isoformat()] = fired.get(day.isoformat(), 0) + counts["dunning"]
    return fired


def test_stripe_invoice_is_tried_on_each_retry_day_once(client, orchestrate):
    hub = orchestrate
    with stripe_failure(client, hub) as stripe_:
        stripe_.declines.add("in_1234")  # every retry is declined: the invoice stays open
        sweep_days(hub, FAILED_ON + timedelta(days=1), 21)
    keys = [f"1:payment-retry:stripe:in_1234/retry-{n}" for n in (1, 2, 3)]
    assert stripe_.attempts == [("in_1234", k) for k in keys]
    paid = [c for c in stripe_.calls if c.operation == "pay_invoice"]
    assert len(paid) == 3 and [c.headers["Idempotency-Key"] for c in paid] == keys
    assert retry_reasons(hub) == [f"retry {n} of 3 due today; Stripe tried the card again: declined "
                                  "(Your card was declined.)" for n in (1, 2, 3)]


@pytest.mark.parametrize("decline, why", [({"decline_code": "lost_card"}, "lost_card"),
                                         ({"advice_code": "do_not_try_again"}, "the issuer advises do_not_try_again")])
def test_a_retry_stripe_declines_for_good_is_the_last_one_asked(client, orchestrate, decline, why):
    hub = orchestrate
    with stripe_failure(client, hub) as stripe_:
        stripe_.declines.add("in_1234")
        if "decline_code" in decline:
            stripe_.decline_codes["in_1234"] = decline["decline_code"]
        else:
            stripe_.advice_codes["in_1234"] = decline["advice_code"]
        sweep_days(hub, FAILED_ON + timedelta(days=1), 21)
    # Card networks charge for retrying a card the issuer said not to: retries 2 and 3 are not asked.
    assert [key.rsplit("/", 1)[1] for _, key in stripe_.attempts] == ["retry-1"]
    assert retry_reasons(hub) == [f"retry 1 of 3 due today; Stripe tried the card again: declined (Your card was "
                                  f"declined.); a hard decline ({why}): no more retries, a new card is needed"]
    with hub.storage.session() as s:  # kept on the payment, as the customer's page shows it
        assert s.execute(select(Payment.hard_decline, Payment.decline_code)).one() == (
            True, decline.get("decline_code", "generic_decline"))


def test_a_retry_stripe_charged_ends_with_a_paid_invoice_and_the_next_ask_is_refused(client, orchestrate):
    hub = orchestrate
    with stripe_failure(client, hub) as stripe_:
        # No invoice.paid webhook reaches the hub here (lost): Stripe itself refuses a second charge.
        sweep_days(hub, FAILED_ON + timedelta(days=1), 21)
    assert [key.rsplit("/", 1)[1] for _, key in stripe_.attempts] == ["retry-1"]
    assert retry_reasons(hub) == ["retry 1 of 3 due today; Stripe was asked to charge again"] + [
        f"retry {n} of 3 due today; Stripe did not charge again: Invoice is already paid" for n in (2, 3)]


def test_shopify_billing_attempt_on_each_retry_day_once(client, orchestrate):
    hub = orchestrate
    with FakeShopifyBilling(token="shpat_orch", owns_contracts=True) as admin:
        shopify_billing_failure(client, hub, admin, "shpat_orch", triggered_at="2026-11-01T12:00:00Z")
        drain_inbox(hub.storage, hub.settings)
        fired = sweep_days(hub, date(2026, 11, 2), 20)
    assert [contract for contract, _ in admin.attempts] == ["gid://shopify/SubscriptionContract/402440842"] * 3
    assert [key.split(":payment-retry:shopify:")[1].rsplit("/", 1)[1] for _, key in admin.attempts] == [
        "retry-1", "retry-2", "retry-3"]
    assert fired["2026-11-04"] >= 1 and fired["2026-11-08"] >= 1 and fired["2026-11-15"] >= 1
    assert retry_reasons(hub) == [f"retry {n} of 3 due today; Shopify was asked to charge again" for n in (1, 2, 3)]


def test_a_shopify_retry_an_interval_after_the_failure_bills_the_cycle_that_failed(client, orchestrate):
    """Without a billingCycleSelector Shopify bills the cycle under way. On a weekly contract
    the third retry (14 days on) falls in a later cycle: every retry names the one that failed."""
    hub = orchestrate
    with FakeShopifyBilling(token="shpat_orch", owns_contracts=True) as admin:
        shopify_billing_failure(client, hub, admin, "shpat_orch", triggered_at="2026-11-01T12:00:00Z")
        drain_inbox(hub.storage, hub.settings)
        contract = admin.contracts[SAMPLE_CONTRACT]
        contract.update(nextBillingDate="2026-11-01T12:00:00Z",
                        billingPolicy={**contract["billingPolicy"], "interval": "WEEK", "intervalCount": 1})
        for day in range(20):
            at = datetime.combine(date(2026, 11, 2) + timedelta(days=day), time(6), tzinfo=timezone.utc)
            admin.clock = lambda at=at: at  # Shopify's day is the sweep's
            run_time_rules(hub, at)
    failed = admin.cycle_index_at(SAMPLE_CONTRACT, datetime(2026, 11, 1, 12, tzinfo=timezone.utc))
    assert len(admin.attempts) == 3 and admin.attempt_cycles == [failed] * 3


def test_shopify_charges_the_retry_later_and_its_success_webhook_ends_the_dunning(client, orchestrate):
    hub = orchestrate
    with FakeShopifyBilling(token="shpat_orch", owns_contracts=True) as admin:
        shopify_billing_failure(client, hub, admin, "shpat_orch", triggered_at="2026-11-01T12:00:00Z")
        drain_inbox(hub.storage, hub.settings)
        sweep_days(hub, date(2026, 11, 2), 3)  # retry 1 asked on 4 November
        # Shopify bills on its own time, then tells the app by webhook.
        for n, (topic, payload) in enumerate(admin.settle()):
            post(client, "shopify", payload, topic=topic, webhook_id=f"wh-settled-{n}",
                 triggered_at="2026-11-04T06:07:00Z")
        drain_inbox(hub.storage, hub.settings)
        sweep_days(hub, date(2026, 11, 5), 15)
    assert [key.rsplit("/", 1)[1] for _, key in admin.attempts] == ["retry-1"]  # no retry 2 or 3 once paid
    assert len(reasons(hub, "payment-recovered")) == 1


def test_a_retry_shopify_declines_later_leaves_the_next_retry_due(client, orchestrate):
    hub = orchestrate
    gid = "gid://shopify/SubscriptionContract/402440842"
    with FakeShopifyBilling(token="shpat_orch", owns_contracts=True) as admin:
        shopify_billing_failure(client, hub, admin, "shpat_orch", triggered_at="2026-11-01T12:00:00Z")
        drain_inbox(hub.storage, hub.settings)
        admin.declines.add(gid)
        sweep_days(hub, date(2026, 11, 2), 3)
        for n, (topic, payload) in enumerate(admin.settle()):
            assert topic == "subscription_billing_attempts/failure"
            post(client, "shopify", payload, topic=topic, webhook_id=f"wh-settled-{n}",
                 triggered_at="2026-11-04T06:07:00Z")
        drain_inbox(hub.storage, hub.settings)
        sweep_days(hub, date(2026, 11, 5), 4)
    assert [key.rsplit("/", 1)[1] for _, key in admin.attempts] == ["retry-1", "retry-2"]


def test_notify_mode_asks_nothing(client, hub):
    with stripe_failure(client, hub) as stripe_:
        # Stripe's announced retry (next_payment_attempt, 2025-04-25) with the reminders on it and
        # 3 days after (no later failure named another), nothing from the hub's own cadence.
        assert sweep_days(hub, FAILED_ON + timedelta(days=1), 21, times=1) == {"2025-04-25": 2, "2025-04-28": 1}
    assert stripe_.attempts == []


def test_a_new_card_while_a_payment_is_owed_asks_stripe_to_retry_it_once(client, orchestrate):
    hub = orchestrate
    card = load_sample("shared:stripe/pay/payment_method.updated.json")  # the same customer, cus_1234
    with stripe_failure(client, hub) as stripe_:
        for event_id in ("evt_card", "evt_card"):  # Stripe delivers it twice
            post(client, "stripe", stripe_event("payment_method.updated", card["object"], event_id=event_id,
                                                created=INVOICE["created"] + 3600,
                                                previous_attributes=card["previous_attributes"]))
            jobs.drain_inbox_job()  # the worker's drain, which asks once the batch is committed
    [(invoice, key)] = stripe_.attempts
    assert (invoice, key.split(":", 1)[1]) == (
        "in_1234", "payment-method-updated:stripe:pm_1000/2035-12")
    # The customer's page says the new card was tried.
    assert reasons(hub, "payment-method-updated")[0].endswith("; Stripe was asked to charge again")


def test_stripe_retrying_on_its_own_schedule_too_is_shown_until_it_announces_no_more(client, orchestrate):
    hub = orchestrate
    add_staff(hub, "olive@shop.test", "operator")
    log_in(client, "olive@shop.test")
    # Stripe's own retry is on: the failed invoice names its next try (next_payment_attempt), tomorrow.
    with stripe_failure(client, hub, next_try=datetime.now(timezone.utc) + timedelta(days=1)):
        text, metrics = dashboard_text(client), client.get("/metrics").get_data(as_text=True)
        assert ("Stripe also retries failed payments on its own schedule: 1 failed payment has a retry "
                "announced by Stripe (the latest: in_1234 on ") in text
        assert "Turn Stripe's own retries off (Billing → Revenue recovery → Retries)" in text
        assert 'hub_payment_retries_platform_scheduled{source="stripe"} 1.0' in metrics
        # Its retries turned off, the next failure announces none.
        post(client, "stripe", stripe_event("invoice.payment_failed", {**INVOICE, "next_payment_attempt": None,
                                                                       "attempt_count": 2},
                                            event_id="evt_f2", created=INVOICE["created"] + 3600))
        drain_inbox(hub.storage, hub.settings)
        text, metrics = dashboard_text(client), client.get("/metrics").get_data(as_text=True)
    assert "on its own schedule" not in text
    assert "hub_payment_retries_platform_scheduled{" not in metrics


def test_a_retry_stripe_announced_days_ago_and_never_reported_on_is_no_longer_shown(client, orchestrate):
    hub = orchestrate
    add_staff(hub, "olive@shop.test", "operator")
    log_in(client, "olive@shop.test")
    # Announced for four days ago, and no failure or payment since: Stripe's webhooks of a
    # retry would have come by now, so its retries are off (or it gave up).
    with stripe_failure(client, hub, next_try=datetime.now(timezone.utc) - timedelta(days=4)):
        text, metrics = dashboard_text(client), client.get("/metrics").get_data(as_text=True)
    assert "on its own schedule" not in text
    assert "hub_payment_retries_platform_scheduled{" not in metrics


def test_in_notify_mode_stripe_s_own_schedule_is_the_one_followed_and_no_warning_shows(client, hub):
    add_staff(hub, "olive@shop.test", "operator")
    log_in(client, "olive@shop.test")
    with stripe_failure(client, hub, next_try=datetime.now(timezone.utc) + timedelta(days=1)):
        assert "on its own schedule" not in dashboard_text(client)


def test_a_retry_shopify_did_not_answer_is_asked_again_by_the_backstop_and_charged_once(client, orchestrate):
    hub = orchestrate
    with FakeShopifyBilling(token="shpat_orch", owns_contracts=True) as admin:
        shopify_billing_failure(client, hub, admin, "shpat_orch", triggered_at="2026-11-01T12:00:00Z")
        drain_inbox(hub.storage, hub.settings)
        admin.errors = INTERNAL_ERROR  # Shopify failing on the first retry day's sweep
        sweep_days(hub, date(2026, 11, 2), 3, times=1)
        assert admin.attempts == []
        [waiting] = retry_reasons(hub)
        assert waiting.startswith("retry 1 of 3 due today; Shopify did not answer (Internal error.")
        assert waiting.endswith("asking again at 2026-11-04 06:01 UTC")
        # Support sees the waiting retry on the dashboard, and monitoring on /metrics.
        assert 'hub_payment_retries_unanswered{source="shopify"} 1.0' in client.get("/metrics").get_data(as_text=True)
        add_staff(hub, "olive@shop.test", "operator")
        log_in(client, "olive@shop.test")
        assert "1 payment retry waiting for Shopify to answer" in dashboard_text(client)
        admin.errors = None  # Shopify is back
        jobs.backstop_job()
        jobs.backstop_job()  # the next minute's: nothing is left to ask
    [(contract, key)] = admin.attempts
    assert contract == "gid://shopify/SubscriptionContract/402440842" and key.endswith("/retry-1")
    assert retry_reasons(hub) == ["retry 1 of 3 due today; Shopify was asked to charge again"]
    assert asks_left(hub) == 0 and "waiting for Shopify" not in dashboard_text(client)


def test_a_retry_shopify_throttles_is_asked_again_and_charged_once(client, orchestrate):
    hub = orchestrate
    with FakeShopifyBilling(token="shpat_orch", owns_contracts=True) as admin:
        shopify_billing_failure(client, hub, admin, "shpat_orch", triggered_at="2026-11-01T12:00:00Z")
        drain_inbox(hub.storage, hub.settings)
        admin.throttle_next = 1
        sweep_days(hub, date(2026, 11, 2), 3, times=1)
        assert admin.attempts == []
        [waiting] = retry_reasons(hub)
        assert waiting.startswith("retry 1 of 3 due today; Shopify did not answer (Billing attempt was throttled.")
        jobs.backstop_job()
    [(_, key)] = admin.attempts
    assert key.endswith("/retry-1") and asks_left(hub) == 0
    assert retry_reasons(hub) == ["retry 1 of 3 due today; Shopify was asked to charge again"]


def test_a_retry_shopify_never_answers_is_given_up_after_six_asks_within_hours(client, orchestrate):
    hub = orchestrate
    with FakeShopifyBilling(token="shpat_orch", owns_contracts=True) as admin:
        shopify_billing_failure(client, hub, admin, "shpat_orch", triggered_at="2026-11-01T12:00:00Z")
        drain_inbox(hub.storage, hub.settings)
        admin.errors = INTERNAL_ERROR
        sweep_days(hub, date(2026, 11, 2), 3, times=1)  # the first ask, on 4 November at 06:00
        at, asked_at = datetime(2026, 11, 4, 6, tzinfo=timezone.utc), []
        while asks_left(hub):
            at += timedelta(minutes=1)  # the backstop, every minute
            if retries.ask_due(hub.storage, hub.settings, at):
                asked_at.append(at.strftime("%H:%M"))
    assert asked_at == ["06:01", "06:06", "06:21", "07:21", "10:21"]
    assert admin.attempts == []
    assert retry_reasons(hub) == ["retry 1 of 3 due today; Shopify did not charge again: no answer after 6 asks "
                                  "(Internal error. Looks like something went wrong on our end.)"]


def test_a_retry_committed_but_not_asked_before_the_worker_died_is_asked_by_the_backstop(client, orchestrate):
    hub = orchestrate
    with stripe_failure(client, hub) as stripe_:
        day = first_retry_committed(hub, FAILED_ON)
        assert stripe_.attempts == []  # the sweep committed its trigger; its worker died before the call
        jobs.backstop_job()
    [(invoice, key)] = stripe_.attempts
    assert invoice == "in_1234" and key.endswith("/retry-1") and day > FAILED_ON
    assert retry_reasons(hub) == ["retry 1 of 3 due today; Stripe was asked to charge again"]


def test_a_worker_killed_after_stripe_charged_but_before_it_wrote_the_answer_charges_once(client, orchestrate,
                                                                                          monkeypatch):
    hub = orchestrate
    record = retries._record

    def killed(*args):
        raise SystemExit("worker killed")  # after Stripe's answer, before the hub wrote it

    with stripe_failure(client, hub) as stripe_:
        monkeypatch.setattr(retries, "_record", killed)
        with pytest.raises(SystemExit):
            sweep_until_a_retry(hub, FAILED_ON)
        monkeypatch.setattr(retries, "_record", record)
        leased_until = lease_end(hub)
        assert leased_until.time() == time(6, 10)  # the ask's 10-minute lease, from the sweep at 06:00
        assert retries.ask_due(hub.storage, hub.settings, leased_until - timedelta(minutes=1)) == 0
        assert retries.ask_due(hub.storage, hub.settings, leased_until) == 1
    assert len(stripe_.attempts) == 1  # the same key: Stripe answered with the first result
    assert len([c for c in stripe_.calls if c.operation == "pay_invoice"]) == 2
    assert retry_reasons(hub) == ["retry 1 of 3 due today; Stripe was asked to charge again"]


def test_two_workers_asking_at_once_make_one_call(client, orchestrate):
    hub = orchestrate
    with stripe_failure(client, hub) as stripe_:
        day = first_retry_committed(hub, FAILED_ON)
        stripe_.slow(0.5)  # Stripe takes its time: both backstops look while the call is out
        with ThreadPoolExecutor(2) as pool:
            taken = list(pool.map(lambda _: retries.ask_due(hub.storage, hub.settings), range(2)))
    assert sorted(taken) == [0, 1] and day > FAILED_ON
    assert len([c for c in stripe_.calls if c.operation == "pay_invoice"]) == 1


def test_a_payment_paid_while_its_retry_waited_is_not_charged_again(client, orchestrate):
    hub = orchestrate
    with stripe_failure(client, hub) as stripe_:
        stripe_.fail(429)  # Stripe's rate limit refuses the first retry day's ask (and the SDK's own tries)
        sweep_until_a_retry(hub, FAILED_ON)
        assert stripe_.attempts == []
        [waiting] = retry_reasons(hub)
        assert "Stripe did not answer" in waiting
        stripe_.heal()
        paid = {**INVOICE, "status": "paid", "paid": True, "amount_paid": INVOICE["amount_due"], "amount_remaining": 0}
        post(client, "stripe", stripe_event("invoice.paid", paid, event_id="evt_paid",
                                            created=INVOICE["created"] + 86400))
        drain_inbox(hub.storage, hub.settings)  # the customer paid through the email's link
        jobs.backstop_job()
    assert stripe_.attempts == []
    assert retry_reasons(hub)[0].endswith("; not asked: the payment is paid now")
    assert asks_left(hub) == 0


def test_shopify_refuses_to_bill_a_paused_contract_and_the_log_says_why(client, orchestrate, caplog):
    hub = orchestrate
    gid = "gid://shopify/SubscriptionContract/402440842"
    with FakeShopifyBilling(token="shpat_orch", owns_contracts=True) as admin:
        shopify_billing_failure(client, hub, admin, "shpat_orch", triggered_at="2026-11-01T12:00:00Z")
        drain_inbox(hub.storage, hub.settings)
        admin.hold(gid, status="PAUSED")  # paused at the store since the failure
        with caplog.at_level(logging.WARNING, logger="hub.sync.rules.dunning"):
            sweep_days(hub, date(2026, 11, 2), 3)
    assert admin.attempts == []  # Shopify bills only an active contract
    [refused] = [r.getMessage() for r in caplog.records if "retry of shopify payment" in r.getMessage()]
    assert "Subscription contract cannot be billed if paused. (CONTRACT_PAUSED)" in refused
    # The retry's reason, as the customer's page shows it, says the charge was not made and why.
    assert retry_reasons(hub) == ["retry 1 of 3 due today; Shopify did not charge again: "
                                  "Subscription contract cannot be billed if paused. (CONTRACT_PAUSED)"]


@contextmanager
def stripe_failure(client, hub, next_try: datetime | None = None):
    """The hub pointed at Stripe's stand-in, with INVOICE's failed payment stored and drained
    (Stripe's own next try moved to `next_try` when given)."""
    invoice = INVOICE if next_try is None else {**INVOICE, "next_payment_attempt": int(next_try.timestamp())}
    with FakeStripeBilling("sk_test_orch") as stripe_:
        hub.settings.STRIPE_API_KEY, hub.settings.STRIPE_API_BASE = "sk_test_orch", stripe_.url
        post(client, "stripe", stripe_event("invoice.payment_failed", invoice, event_id="evt_f",
                                            created=INVOICE["created"]))
        drain_inbox(hub.storage, hub.settings)
        yield stripe_


def sweep_until_a_retry(hub, after: date) -> date:
    """`hub sweep` each morning after `after` until one fires a retry; that day."""
    day = after
    while not retry_reasons(hub):
        day += timedelta(days=1)
        run_time_rules(hub, datetime.combine(day, time(6), tzinfo=timezone.utc))
    return day


def lease_end(hub) -> datetime:
    """Until when the one waiting retry ask is leased to the worker that took it."""
    with hub.storage.session() as s:
        return s.scalars(select(RetryAsk.due_at)).one()


def retry_reasons(hub) -> list[str]:
    return reasons(hub, "payment-retry")


def reasons(hub, rule: str) -> list[str]:
    """The reasons of a rule's triggers, as the customer's page shows them."""
    with hub.storage.session() as s:
        return list(s.scalars(select(Trigger.reason).where(Trigger.rule == rule).order_by(Trigger.id)))


def dashboard_text(client) -> str:
    """The dashboard's visible text, as the logged-in operator reads it now (not the 30-second cache)."""
    dashboard._cache.clear()
    return visible_text(client.get("/sync-log/dashboard").get_data(as_text=True))


def asks_left(hub) -> int:
    with hub.storage.session() as s:
        return len(s.scalars(select(RetryAsk.trigger_id)).all())


def first_retry_committed(hub, FAILED_ON: date) -> date:
    """Sweeps committed as the sweep job does, and nothing after each (its worker killed
    before asking), each morning until one fires the first retry; that day."""
    for n in range(1, 8):
        day = FAILED_ON + timedelta(days=n)
        with hub.storage.session() as session:
            now = datetime.combine(day, time(6), tzinfo=timezone.utc)
            if rules.run_sweep(session, now, rules.current_params(hub.settings), hub.settings).counts["dunning"]:
                return day
    raise AssertionError("no retry within a week")
