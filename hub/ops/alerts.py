"""Alerts for staff: a Slack-compatible message to HUB_ALERT_WEBHOOK_URL when something needs
a person — a connector's deliveries dead-letter, a tool's calls fail too often, failed events
pile up, a platform's webhooks stop arriving for longer than usual — and a daily digest
(which also names a platform retrying failed payments beside the hub's orchestrated retries).

Run from the cron (hub.jobs.alerts_job). Each cause ("dead:klaviyo", "silence:stripe", ...)
alerts at most once an hour; when it last did is kept in the checkpoint table, so a restarted
worker does not send it again. An alert that could not be sent is tried at the next run.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import requests
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub.models import DEAD, FAILED, SENT, Delivery, DeliveryAttempt, InboxEvent
from hub.models.subscriber import Payment, Subscriber, Subscription
from hub.ops import consent
from hub.ops.backfill import load_checkpoint, save_checkpoint
from hub.sync import retries
from hub.values import money_text
from webhooks import SOURCE_NAMES, get_source

log = logging.getLogger(__name__)

CHECKPOINT = "alerts"
QUIET = timedelta(hours=1)  # never more than one alert per cause within this
ERROR_RATE_WINDOW = timedelta(hours=1)
ERROR_RATE_MIN_CALLS = 10  # fewer calls than this in the window say nothing about a rate
SILENCE_SAMPLE = 50  # recent webhooks of a platform whose gaps make its "usual"
SILENCE_MIN_WEBHOOKS = 10
SILENCE_FLOOR = timedelta(hours=1)
SEND_TIMEOUT_S = 10


@dataclass
class Alert:
    cause: str
    text: str


def due_alerts(session: Session, settings, now: datetime, state: dict) -> list[Alert]:
    """Every alert whose condition holds now (before the once-an-hour limit)."""
    sent = state.get("sent", {})
    alerts = dead_letters(session, settings, now, sent)
    alerts += error_rates(session, settings, now)
    alerts += failed_events(session, settings)
    alerts += silences(session, settings, now)
    digest = daily_digest(session, settings, now, state)
    return alerts + ([digest] if digest else [])


def dead_letters(session: Session, settings, now: datetime, sent: dict) -> list[Alert]:
    """Deliveries that went dead since the connector's last alert (or within the hour)."""
    alerts = []
    rows = session.execute(
        select(Delivery.connector, Delivery.id, func.max(DeliveryAttempt.at))
        .join(DeliveryAttempt, DeliveryAttempt.delivery_id == Delivery.id)
        .where(Delivery.status == DEAD).group_by(Delivery.connector, Delivery.id))
    new = defaultdict(int)
    total = defaultdict(int)
    for connector, _id, last_at in rows:
        total[connector] += 1
        since = _since(sent.get(f"dead:{connector}"), now - QUIET)
        if last_at is not None and _aware(last_at) > since:
            new[connector] += 1
    for connector, count in sorted(new.items()):
        link = f"{settings.HUB_BASE_URL}/sync-log/deliveries?status=dead&connector={connector}"
        alerts.append(Alert(f"dead:{connector}", (
            f":warning: {connector}: {count} {_plural(count, 'delivery', 'deliveries')} gave up after every retry "
            f"({total[connector]} dead in all). Fix the cause, then retry them: {link}")))
    return alerts


def error_rates(session: Session, settings, now: datetime) -> list[Alert]:
    """Tools whose calls failed at least HUB_ALERT_ERROR_RATE_PERCENT of the time in the last hour."""
    rows = session.execute(
        select(Delivery.connector, DeliveryAttempt.outcome, func.count())
        .join(Delivery, Delivery.id == DeliveryAttempt.delivery_id)
        .where(DeliveryAttempt.at >= now - ERROR_RATE_WINDOW)
        .group_by(Delivery.connector, DeliveryAttempt.outcome))
    calls, failed = defaultdict(int), defaultdict(int)
    for connector, outcome, count in rows:
        calls[connector] += count
        if outcome != SENT:
            failed[connector] += count
    alerts = []
    for connector in sorted(calls):
        if calls[connector] < ERROR_RATE_MIN_CALLS:
            continue
        rate = 100 * failed[connector] / calls[connector]
        if rate >= settings.HUB_ALERT_ERROR_RATE_PERCENT:
            alerts.append(Alert(f"error_rate:{connector}", (
                f":warning: {connector}: {failed[connector]} of {calls[connector]} calls in the last hour failed "
                f"({rate:.0f} %, alert at {settings.HUB_ALERT_ERROR_RATE_PERCENT} %). "
                f"The sync log says what it answered: "
                f"{settings.HUB_BASE_URL}/sync-log/deliveries?connector={connector}")))
    return alerts


def failed_events(session: Session, settings) -> list[Alert]:
    """Failed inbound events piling up; those waiting for their platform to answer (which
    the hub tries again by itself) are named apart, as they need no replay."""
    failed = InboxEvent.open_in_index_order(InboxEvent.retry_at, where=(InboxEvent.status == FAILED,))
    count, waiting = session.execute(select(func.count(), func.count(failed.c.retry_at))).one()
    if count < settings.HUB_ALERT_FAILED_EVENTS:
        return []
    if waiting == count:
        then = "They wait for their platform to answer: the hub tries them again by itself. See"
    elif waiting:
        then = (f"{waiting} of them wait for their platform to answer: the hub tries those again by itself. "
                "Fix the cause of the others, then replay them:")
    else:
        then = "Fix the cause, then replay them:"
    return [Alert("failed_events", (
        f":warning: {count} inbound {_plural(count, 'event', 'events')} failed to process "
        f"(alert at {settings.HUB_ALERT_FAILED_EVENTS}). {then} "
        f"{settings.HUB_BASE_URL}/sync-log/failed-events"))]


def silences(session: Session, settings, now: datetime) -> list[Alert]:
    """Platforms whose webhooks stopped for HUB_ALERT_SILENCE_FACTOR times their usual gap."""
    alerts = []
    for source in SOURCE_NAMES:
        if not all(getattr(settings, name) for name in get_source(source).secret_settings):
            continue  # not set up: no webhook is expected
        times = [_aware(t) for t in session.scalars(
            select(InboxEvent.received_at).where(InboxEvent.source == source, InboxEvent.origin == "webhook")
            .order_by(InboxEvent.id.desc()).limit(SILENCE_SAMPLE + 1))]
        if len(times) < SILENCE_MIN_WEBHOOKS:
            continue  # too few to know what is usual
        usual = usual_gap(times)
        quiet = now - max(times)
        allowed = max(usual * settings.HUB_ALERT_SILENCE_FACTOR, SILENCE_FLOOR)
        if quiet > allowed:
            alerts.append(Alert(f"silence:{source}", (
                f":warning: No webhook from {source} for {_duration(quiet)} (usually one every "
                f"{_duration(usual)} or sooner). Check its webhook registration: "
                f"{settings.HUB_BASE_URL}/sync-log/dashboard")))
    return alerts


def usual_gap(times: list[datetime]) -> timedelta:
    """The gap between consecutive webhooks that 9 in 10 recent gaps do not exceed."""
    ordered = sorted(times)
    gaps = sorted(b - a for a, b in zip(ordered, ordered[1:]))
    return gaps[min(len(gaps) - 1, int(0.9 * len(gaps)))]


def daily_digest(session: Session, settings, now: datetime, state: dict) -> Alert | None:
    """Once a day from HUB_ALERT_DIGEST_HOUR (UTC): the last 24 hours in a few numbers."""
    today = now.date().isoformat()
    if now.hour < settings.HUB_ALERT_DIGEST_HOUR or state.get("digest_on") == today:
        return None
    since = now - timedelta(days=1)
    joined = session.scalar(select(func.count()).select_from(Subscriber).where(Subscriber.created_at >= since))
    churned = session.scalar(select(func.count()).select_from(Subscription).where(
        Subscription.canceled_at >= since, Subscription.canceled_at < now))
    recovered = session.execute(
        select(Payment.currency, func.sum(Payment.amount)).where(
            Payment.status == "succeeded", Payment.first_failed_at.is_not(None),
            Payment.paid_at >= since, Payment.paid_at < now).group_by(Payment.currency))
    money = ", ".join(money_text(amount or 0, currency) for currency, amount in recovered if currency) or "nothing"
    lines = [f"Daily digest, the 24 hours to {now:%d %b %Y, %H:%M} UTC:",
             f"• new subscribers: {joined}", f"• subscriptions cancelled: {churned}",
             f"• revenue recovered from failed payments: {money}"]
    drift = consent.last_report(session)
    if drift["checked_at"]:
        lines.append(f"• consents that differ between platform and tools: {drift['drifted']} "
                     f"({drift['still_subscribed']} withdrawn but still subscribed in a tool)")
    for source, found in sorted(retries.own_schedules(session, settings, now).items()):
        n = found["count"]
        lines.append(f"• {source.capitalize()} retries {n} failed payment{'s' if n != 1 else ''} on its own "
                     f"schedule too, beside the hub's orchestrated retries: turn its retries off "
                     f"({found['turn_off']})")
    lines.append(f"Dashboard: {settings.HUB_BASE_URL}/sync-log/dashboard")
    return Alert("digest", "\n".join(lines))


def run(storage, settings, now: datetime | None = None, post=None) -> list[str]:
    """Send every due alert not sent for its cause within the hour; the causes sent.
    `post(url, text) -> bool` sends one (default: Slack-compatible JSON, see send())."""
    if not settings.HUB_ALERT_WEBHOOK_URL:
        return []
    now = now or datetime.now(timezone.utc)
    post = post or send
    done = []
    with storage.session() as session:
        state = load_checkpoint(session, CHECKPOINT) or {}
        sent = dict(state.get("sent", {}))
        for alert in due_alerts(session, settings, now, state):
            last = sent.get(alert.cause)
            if last is not None and now - _aware(datetime.fromisoformat(last)) < QUIET:
                continue
            if not post(settings.HUB_ALERT_WEBHOOK_URL, alert.text):
                continue  # tried again at the next run
            sent[alert.cause] = now.isoformat()
            if alert.cause == "digest":
                state["digest_on"] = now.date().isoformat()
            done.append(alert.cause)
        if done:
            state["sent"] = sent
            save_checkpoint(session, CHECKPOINT, state)
    return done


def send(url: str, text: str) -> bool:
    """POST {"text": ...} as JSON, the message format of Slack's incoming webhooks
    (https://docs.slack.dev/tools/java-slack-sdk/guides/incoming-webhooks); 200 is success and
    anything else a failure (https://api.slack.com/changelog/2016-05-17-changes-to-errors-for-incoming-webhooks).
    The URL holds the channel's secret: it never reaches the logs."""
    try:
        response = requests.post(url, json={"text": text}, timeout=SEND_TIMEOUT_S)
    except requests.RequestException as exc:
        log.warning("staff alert not sent: %s", type(exc).__name__)
        return False
    if response.status_code != 200:
        log.warning("staff alert not sent: the receiver answered %s %s", response.status_code,
                    response.text[:100])
        return False
    return True


def _since(iso: str | None, default: datetime) -> datetime:
    """The cause's last alert covered everything up to it; without one, `default`."""
    return _aware(datetime.fromisoformat(iso)) if iso else default


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _plural(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


def _duration(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours} h" if hours < 48 else f"{hours // 24} days"
