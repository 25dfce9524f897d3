"""Orchestrated retries (dunning mode `orchestrate`): the platform asked to charge a failed
payment again, once per retry trigger, and nothing lost on the way.

The rules write a RetryAsk in the transaction that fires the trigger (`plan`). Once that is
committed, `ask_due` asks the platform: the sweep job after its sweep, the drain job after
its drain, and the backstop every minute. The trigger's key is the platform's idempotency
key, so asking again after a killed worker or an answer that never came charges once.

- An ask is leased before the call (its `due_at` moves LEASE ahead, committed), so two
  workers never ask at once and a worker killed mid-call leaves it to be asked again.
- The platform's answer (charged, declined, refused) ends it: the row goes, and the
  trigger's reason says what came of it, as the customer's page shows it.
- No answer (unreachable, 5xx, 408, 425, 429: the retrier raises RetryLater) is asked again after
  AGAIN_AFTER, then given up, well inside the platforms' idempotency windows (Stripe keeps
  a key at least 24 hours: https://docs.stripe.com/api/idempotent_requests).
- A payment paid, voided or erased meanwhile is not asked for: a Shopify billing attempt on
  a contract whose payment was recovered would charge the customer again.
- A hard decline in the answer (ChargeDeclined.hard) is kept on the payment at once, so the
  later retry days ask nothing.

The platform may be retrying the same payments on its own schedule too (Stripe turns Smart
Retries on for new accounts): `own_schedules` finds the failed payments it announced a
retry of, for the dashboard and /metrics to say so. A retry announced for more than
UNHEARD_AFTER ago with no word since (no new failure, no payment) is not counted: had the
platform tried, it would have said so; its retries were turned off, or it gave up.
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from hub.errors import ChargeDeclined, RetryLater
from hub.models import Payment, RetryAsk, Subscriber, Subscription, Trigger, now_utc
from hub.sync import rules
from hub.sync.rules.dunning import log
from hub.sync.rules.state import OPEN_PAYMENT, PaymentState
from webhooks import SOURCES
from webhooks.source import RetrySetup

# Longer than a platform call with its own retries can take (Stripe's SDK: a few tries of
# up to 80 s), so a lease never runs out under a call still in flight.
LEASE = timedelta(minutes=10)
# After an ask that got no answer: the waits before the next ask; then it is given up.
AGAIN_AFTER = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15), timedelta(hours=1),
               timedelta(hours=3))
CLAIM = 20  # asks leased at a time
# How long past a platform's announced retry its outcome may still arrive: both redeliver a
# webhook the hub did not take for up to three days (Stripe in live mode,
# https://docs.stripe.com/webhooks#retries; Chargebee,
# https://chargebee.com/docs/1.0/site-configuration/articles-and-faq/how-would-i-know-if-the-configured-webhook-url-in-my-chargebee-site-is-failing.html).
UNHEARD_AFTER = timedelta(days=3)
# A payment's status, as the page says why its retry was not asked for.
NOT_OWED = {"succeeded": "paid", "void": "voided", "uncollectible": "written off", "new": "not yet charged"}


def setups(settings) -> dict[str, RetrySetup]:
    """source → whether orchestrated retries ask it with these settings, for each source in use."""
    return {name: setup for name, source in SOURCES.items()
            if source.retry_setup and (setup := source.retry_setup(settings)) is not None}


def own_schedules(session: Session, settings, now: datetime | None = None) -> dict[str, dict]:
    """In dunning mode `orchestrate`: source → {"count", "payment", "at", "turn_off"} for each
    platform the hub asks that announced retries of its own on open failed payments
    (Payment.next_retry_at), still to come or due within UNHEARD_AFTER of `now`: how many,
    the one whose retry is latest and when, and where its own retries are turned off. Empty
    in `notify` mode, where following them is the point."""
    if settings is None or rules.current_params(settings).dunning.mode != "orchestrate":
        return {}
    asked = [name for name, setup in setups(settings).items() if setup.asked and SOURCES[name].own_retries]
    if not asked:
        return {}
    announced = (Payment.status.in_(OPEN_PAYMENT), Payment.next_retry_at >= (now or now_utc()) - UNHEARD_AFTER,
                 Payment.source.in_(asked))
    found = {}
    for source, count, at in session.execute(select(Payment.source, func.count(), func.max(Payment.next_retry_at))
                                             .where(*announced).group_by(Payment.source)):
        payment = session.scalar(select(Payment.source_id).where(*announced, Payment.source == source,
                                                                 Payment.next_retry_at == at).limit(1))
        found[source] = {"count": count, "payment": payment, "at": at, "turn_off": SOURCES[source].own_retries}
    return found


def plan(session: Session, asks: list[tuple[int, int, str | None]], at: datetime) -> None:
    """Record retries to ask once this transaction commits, due `at` (the rules' now):
    (trigger id, payment id, the trigger's reason). Each trigger is new, so each is asked
    for once."""
    if asks:
        session.execute(insert(RetryAsk), [{"trigger_id": t, "payment_id": p, "reason": r, "due_at": at,
                                            "tries": 0} for t, p, r in asks])


def ask_due(storage, settings, now: datetime | None = None, budget_s: float = 10.0) -> int:
    """Ask the platforms for every retry due by `now` (default: the clock), for up to
    `budget_s` of calls (the rest waits for the next backstop); the number of due asks taken
    (asked, or found not to be asked any more)."""
    asked, started = 0, time.monotonic()
    while time.monotonic() - started < budget_s:
        at = now or now_utc()
        with storage.session() as session:  # a look without the write lock: mostly nothing is due
            due = _due(session, at)
        if not due:
            break
        with storage.write_turn(), storage.session() as session:
            leased = _lease(session, due, at)
        for ask in leased:
            outcome, again, hard = _ask(ask, settings, at)
            with storage.write_turn(), storage.session() as session:
                _record(session, ask, outcome, again, hard)
            asked += 1
        if len(due) < CLAIM:
            break
    return asked


def _due(session: Session, at: datetime) -> list[dict]:
    """Up to CLAIM asks due by `at`, with their trigger's key."""
    return [dict(row) for row in session.execute(
        select(RetryAsk.trigger_id, RetryAsk.payment_id, RetryAsk.reason, RetryAsk.due_at, RetryAsk.tries,
               Trigger.subscriber_id, Trigger.rule, Trigger.occasion)
        .join(Trigger, Trigger.id == RetryAsk.trigger_id, isouter=True)
        .where(RetryAsk.due_at <= at).order_by(RetryAsk.due_at).limit(CLAIM)).mappings()]


def _lease(session: Session, due: list[dict], at: datetime) -> list[dict]:
    """The due asks this caller leased (another may have taken some since the look), each
    with its payment as it stands now."""
    leased = []
    for row in due:
        taken = session.execute(update(RetryAsk).where(RetryAsk.trigger_id == row["trigger_id"],
                                                       RetryAsk.due_at == row["due_at"])
                                .values(due_at=at + LEASE, tries=RetryAsk.tries + 1)).rowcount
        if taken:  # else another worker leased it between the two statements
            leased.append({**row, "tries": row["tries"] + 1, "payment": _payment(session, row["payment_id"])})
    return leased


def _payment(session: Session, payment_id: int) -> PaymentState | None:
    """The payment as it stands now, with its subscription's platform id and when it first
    failed (the billing cycle a Shopify retry names); None when gone or its person erased."""
    row = session.execute(
        select(Payment.id, Payment.subscriber_id, Payment.source, Payment.source_id, Payment.status,
               Payment.first_failed_at, Payment.due_at, Subscription.source_id.label("subscription_source_id"))
        .join(Subscription, Subscription.id == Payment.subscription_id, isouter=True)
        .join(Subscriber, Subscriber.id == Payment.subscriber_id)
        .where(Payment.id == payment_id, Subscriber.erased_at.is_(None))).mappings().first()
    return PaymentState(**row) if row else None


def _ask(ask: dict, settings, at: datetime) -> tuple[str, datetime | None, ChargeDeclined | None]:
    """Ask the platform once; what came of it in words, when to ask again (None: done), and
    the decline when it was a hard one (no retry will fix it)."""
    payment = ask["payment"]
    if payment is None or ask["rule"] is None:
        return "not asked: the payment is no longer on record", None, None
    platform = payment.source.capitalize()  # Shopify, Stripe, Chargebee
    if payment.status not in OPEN_PAYMENT:
        return f"not asked: the payment is {NOT_OWED.get(payment.status, payment.status)} now", None, None
    source = SOURCES.get(payment.source)
    retrier = source.retry_payment if source is not None else None
    if retrier is None or settings is None:
        log.warning("dunning mode is orchestrate but %s cannot be asked to retry payment %s",
                    payment.source, payment.source_id)
        return f"{platform} cannot be asked to charge again", None, None
    key = f"{ask['subscriber_id']}:{ask['rule']}:{ask['occasion']}"
    try:
        retrier(settings, payment, key)
    except RetryLater as exc:
        log.warning("retry of %s payment %s (%s) got no answer: %s", payment.source, payment.source_id, key, exc)
        if ask["tries"] > len(AGAIN_AFTER):
            return f"{platform} did not charge again: no answer after {ask['tries']} asks ({_said(exc)})", None, None
        wait = max(AGAIN_AFTER[ask["tries"] - 1], timedelta(seconds=exc.retry_after))
        return (f"{platform} did not answer ({_said(exc)}); asking again at {(at + wait):%Y-%m-%d %H:%M} UTC",
                at + wait, None)
    except ChargeDeclined as exc:
        log.warning("retry of %s payment %s (%s) declined: %s", payment.source, payment.source_id, key, exc)
        if exc.hard:
            # The rules then skip the retries left and ask for a new card: re-attempting a
            # card the issuer will never approve "could lead to fines from Visa or MasterCard"
            # (https://developer.nexigroup.com/nexi-checkout/en-EU/docs/manage-subscription-retries).
            return (f"{platform} tried the card again: declined ({_said(exc)}); a hard decline ({exc.hard}): "
                    "no more retries, a new card is needed"), None, exc
        return f"{platform} tried the card again: declined ({_said(exc)})", None, None
    except Exception as exc:  # noqa: BLE001 - the platform's refusal, in its words; the others go on
        log.warning("retry of %s payment %s (%s) failed: %s", payment.source, payment.source_id, key, exc)
        return f"{platform} did not charge again: {_said(exc)}", None, None
    return f"{platform} was asked to charge again", None, None


def _said(exc: Exception) -> str:
    """The first line of what the platform said (Shopify's internal error adds a request id
    line), short enough for the page."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _record(session: Session, ask: dict, outcome: str, again: datetime | None,
            hard: ChargeDeclined | None = None) -> None:
    """The answer on the trigger's reason; the ask ends, or waits until `again`. A hard decline
    is kept on the payment, as its webhook would keep it, so no later retry day asks again."""
    reason = f"{ask['reason']}; {outcome}" if ask["reason"] else outcome
    session.execute(update(Trigger).where(Trigger.id == ask["trigger_id"]).values(reason=reason))
    if hard is not None:
        session.execute(update(Payment).where(Payment.id == ask["payment_id"])
                        .values(hard_decline=True, decline_code=hard.code[:64] if hard.code else None))
    if again is not None:
        session.execute(update(RetryAsk).where(RetryAsk.trigger_id == ask["trigger_id"]).values(due_at=again))
    else:
        session.execute(delete(RetryAsk).where(RetryAsk.trigger_id == ask["trigger_id"]))
