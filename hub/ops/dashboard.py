"""Retention dashboard figures, computed from the hub's own tables.

Each figure is a pure function over query rows (testable without a database); `build()`
runs the queries and puts the figures together for the page.

Where the figures come from:
- subscribers by stage over time: today's stage of every subscriber, walked back through
  the `Stage Changed` triggers (their `from`), each person counted from first seen;
- MRR and its movements, churn rate: a ledger kept in the checkpoint table that reads
  each inbox row's recorded outcome once, by primary key, and books every change of a
  subscription's monthly amount as new, expansion, contraction or churn in the month the
  change happened (so a million inbox rows are never rescanned for one page view);
- dunning recovery: payments by the month of their first failure, recovered when paid
  within the dunning recovery window (mappings/rules.yaml);
- reminders sent: fired triggers by name and month (ix_trigger_due);
- queue depth and error rate per connector: the outbox (ix_delivery_queue) and the most
  recent delivery attempts;
- cohort retention: subscribers by the month of their first subscription, still holding
  a live subscription at the end of each later month.
"""
from __future__ import annotations

import copy
import threading
import time
from bisect import bisect_left
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone
from ipaddress import ip_address
from urllib.parse import urlsplit

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

import connectors
from hub import events as ev
from hub.db.dialect import insert_ignore, utc_day, utc_month
from hub.models import (
    DEAD,
    FAILED,
    PENDING,
    QUEUED,
    RETRYING,
    Checkpoint,
    Delivery,
    DeliveryAttempt,
    InboxEvent,
    Payment,
    Subscriber,
    Subscription,
    Trigger,
)
from hub.ops.consent import last_report
from hub.ops.reconcile import recovered_total
from hub.ops.synclog import unanswered_retry_counts
from hub.sync import retries, rules
from hub.sync.inbox import EARLIER
from hub.values import Money, iso, per_month, utc
from webhooks import SOURCES

STAGES = ("new", "engaged", "loyal", "at_risk", "churned")
# Triggers that reach a customer as a message: the "reminders" of the dashboard.
REMINDERS = ("Welcome Step", "Renewal Reminder", "Trial Ending", "Card Expiring", "Payment Failed",
             "Payment Reminder", "Win Back", "Upsell Opportunity", "Back In Stock")
MOVEMENTS = ("new", "expansion", "contraction", "churn")
# Subscription statuses that bring revenue (hub.sync.outbox.MRR_STATUSES).
PAYING = ("active", "past_due")
ENDED = ("canceled", "expired")

LEDGER = "dashboard.mrr"
REGISTRATIONS = "webhook_registrations"  # written by hub.ops.registrations.record_watch
LEDGER_STEP = 20_000  # inbox rows the ledger reads per page view (a cron job can catch up faster)
ATTEMPT_SAMPLE = 100_000  # most recent delivery attempts read for the error rates
CACHE_SECONDS = 30


# Calendar helpers (pure) ----------------------------------------------------------------

def month_key(value: datetime | date | str) -> str:
    if isinstance(value, str):
        return value[:7]
    return f"{value.year:04d}-{value.month:02d}"


def month_keys(as_of: datetime, months: int) -> list[str]:
    """The last `months` calendar months up to the one holding `as_of`, oldest first."""
    year, month = as_of.year, as_of.month
    keys = []
    for _ in range(months):
        keys.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return keys[::-1]


def month_end(key: str) -> datetime:
    """The first instant after month `key` (YYYY-MM)."""
    year, month = int(key[:4]), int(key[5:7])
    year, month = (year, month + 1) if month < 12 else (year + 1, 1)
    return datetime(year, month, 1, tzinfo=timezone.utc)


def add_months(key: str, n: int) -> str:
    year, month = int(key[:4]), int(key[5:7]) - 1 + n
    return f"{year + month // 12:04d}-{month % 12 + 1:02d}"


def day_list(as_of: datetime, days: int) -> list[date]:
    end = as_of.date()
    return [end - timedelta(days=days - 1 - i) for i in range(days)]


# Subscribers by stage over time (pure) -----------------------------------------------------

def stage_series(days: list[date], base: list[tuple], movers: dict) -> dict[str, list[int]]:
    """Subscribers per stage at the end of each day.

    base: (current stage, first-seen day, count) for every subscriber;
    movers: subscriber id → (first-seen day, current stage, [(move day, from, to), ...]) for
    those with `Stage Changed` triggers on or after the first day. A person counts from
    the day first seen; on a day before one of their moves they were in that move's `from`.
    """
    n = len(days)
    diff: dict[str, list[int]] = defaultdict(lambda: [0] * (n + 1))
    for stage, first_day, count in base:
        i = bisect_left(days, _as_date(first_day)) if first_day else 0
        if i < n:
            diff[stage or "unknown"][i] += count
            diff[stage or "unknown"][n] -= count
    for first_day, current, moves in movers.values():
        current = current or "unknown"
        start = bisect_left(days, _as_date(first_day)) if first_day else 0
        for move_day, was, _now in sorted(moves, key=lambda m: m[0]):
            end = min(n, bisect_left(days, _as_date(move_day)))
            if end > start:
                diff[was or "unknown"][start] += 1
                diff[was or "unknown"][end] -= 1
                diff[current][start] -= 1
                diff[current][end] += 1
            start = max(start, end)
    series = {}
    for stage in list(STAGES) + sorted(set(diff) - set(STAGES)):
        if stage not in diff:
            series[stage] = [0] * n
            continue
        running, values = 0, []
        for i in range(n):
            running += diff[stage][i]
            values.append(running)
        series[stage] = values
    return series


def _as_date(value) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


# MRR movements (pure) ------------------------------------------------------------------------

monthly = per_month  # price per month in minor units, the rule of hub.sync.outbox.monthly_amount


def movement(before: int, after: int) -> str | None:
    """How a change of one subscription's MRR is booked."""
    if before == after:
        return None
    if before == 0:
        return "new"
    if after == 0:
        return "churn"
    return "expansion" if after > before else "contraction"


def _subscription_for(label: str, held: list[dict]) -> dict | None:
    name = label.removeprefix("subscription ").strip()
    for s in held:
        if name and name in (s.get("plan"), s.get("source_id")):
            return s
    return held[0] if len(held) == 1 else None


def _pair(fields: dict, now: dict, name: str) -> tuple:
    """(before, after) of a field: from the entry when it changed, else as held now."""
    return fields[name] if name in fields else (now.get(name), now.get(name))


def mrr_moves(entry: dict, held: list[dict]) -> list[tuple[str, str, str, int]]:
    """(month, currency, movement, amount) for one recorded outcome entry.

    `held` is the subscriber's subscriptions as they are now; a field the entry did not
    change is read from there (the interval and currency rarely change). A status the
    entry did not change counts as paying unless the subscription is in trial or paused.
    """
    if entry.get("stale") or not entry.get("occurred_at") or EARLIER in entry:
        return []
    groups: dict[str, dict] = defaultdict(dict)
    for change in entry.get("changed") or ():
        what = str(change.get("what") or "")
        if what.startswith("subscription "):
            groups[what][change.get("field")] = (change.get("from"), change.get("to"))
    moves = []
    for label, fields in groups.items():
        if not fields.keys() & {"created", "status", "amount", "interval", "interval_count", "currency"}:
            continue
        now = _subscription_for(label, held) or {}
        amount, interval, count, currency = (_pair(fields, now, name) for name in
                                             ("amount", "interval", "interval_count", "currency"))
        if "created" in fields:
            status = (None, fields["status"][1] if "status" in fields else fields["created"][1])
        elif "status" in fields:
            status = fields["status"]
        else:
            assumed = "trialing" if now.get("status") in ("trialing", "paused", "incomplete") else "active"
            status = (assumed, assumed)
        before = monthly(amount[0], interval[0], count[0]) if status[0] in PAYING else 0
        after = monthly(amount[1], interval[1], count[1]) if status[1] in PAYING else 0
        kind = movement(before, after)
        code = (currency[1] or currency[0] or "").upper()
        if kind and code:
            moves.append((month_key(entry["occurred_at"]), code, kind, after - before))
    return moves


def book(months: dict, moves) -> None:
    """Add movements to the ledger's months: {month: {currency: {movement: amount, *_count}}}."""
    for month, currency, kind, amount in moves:
        cell = months.setdefault(month, {}).setdefault(currency, {})
        cell[kind] = cell.get(kind, 0) + amount
        if kind in ("new", "churn"):
            cell[f"{kind}_count"] = cell.get(f"{kind}_count", 0) + 1


def mrr_series(months_data: dict, keys: list[str], currency: str) -> dict:
    """MRR at each month's end, its movements and the churn rate, in `currency` minor units."""
    out = {m: [] for m in MOVEMENTS}
    mrr, paying_start, churned, rate, revenue_churn, retention = [], [], [], [], [], []
    level = count = 0
    for month in sorted(k for k in months_data if k < keys[0]):
        cell = months_data[month].get(currency, {})
        level += sum(cell.get(m, 0) for m in MOVEMENTS)
        count += cell.get("new_count", 0) - cell.get("churn_count", 0)
    for month in keys:
        cell = (months_data.get(month) or {}).get(currency, {})
        paying_start.append(count)
        # Of the MRR held at the month's start: the share lost to cancellations and
        # downgrades (revenue churn), and what the same customers pay at its end (net revenue
        # retention: start + expansion - contraction - churn; new customers are not theirs).
        lost_mrr = -(cell.get("contraction", 0) + cell.get("churn", 0))
        kept_mrr = level + cell.get("expansion", 0) - lost_mrr
        revenue_churn.append(round(100 * lost_mrr / level, 1) if level > 0 else None)
        retention.append(round(100 * kept_mrr / level, 1) if level > 0 else None)
        for m in MOVEMENTS:
            out[m].append(cell.get(m, 0))
        level += sum(cell.get(m, 0) for m in MOVEMENTS)
        lost = cell.get("churn_count", 0)
        churned.append(lost)
        rate.append(round(100 * lost / count, 1) if count > 0 else None)
        count += cell.get("new_count", 0) - lost
        mrr.append(level)
    return {"labels": keys, "mrr": mrr, **out, "paying_at_start": paying_start, "churned": churned,
            "churn_rate": rate, "revenue_churn": revenue_churn, "net_retention": retention}


def main_currency(months_data: dict, fallback: str | None = None) -> str | None:
    """The currency most MRR moved in (one chart shows one currency)."""
    totals: Counter = Counter()
    for cells in months_data.values():
        for code, cell in cells.items():
            totals[code] += sum(abs(cell.get(m, 0)) for m in MOVEMENTS)
    return totals.most_common(1)[0][0] if totals else fallback


# Dunning, reminders, connectors, cohorts (pure) ------------------------------------------------

def recovery_by_month(rows, keys: list[str], as_of: datetime, window_days: int) -> dict:
    """Failed payments by month of first failure: recovered within the window, still open, rate."""
    failed, recovered, still_open = Counter(), Counter(), Counter()
    window = timedelta(days=window_days)
    for first_failed_at, paid_at, status in rows:
        month = month_key(first_failed_at)
        failed[month] += 1
        if status == "succeeded" and paid_at is not None and paid_at - first_failed_at <= window:
            recovered[month] += 1
        elif as_of - first_failed_at < window:
            still_open[month] += 1
    rate = []
    for m in keys:
        decided = failed[m] - still_open[m]
        rate.append(round(100 * recovered[m] / decided, 1) if decided > 0 else None)
    return {"labels": keys, "failed": [failed[m] for m in keys], "recovered": [recovered[m] for m in keys],
            "open": [still_open[m] for m in keys], "rate": rate}


def recovered_revenue(rows, keys: list[str], currency: str) -> list[int]:
    """(paid_at, amount, currency) of payments paid after failing → money recovered per month
    of payment, in `currency` minor units (other currencies are not converted)."""
    by_month: Counter = Counter()
    for paid_at, amount, code in rows:
        if amount and (code or "").upper() == currency.upper():
            by_month[month_key(paid_at)] += amount
    return [by_month[m] for m in keys]


def reminders_by_month(rows, keys: list[str]) -> dict:
    """(name, month, count) rows → one series per reminder type."""
    series = {name: [0] * len(keys) for name in REMINDERS}
    index = {k: i for i, k in enumerate(keys)}
    for name, month, count in rows:
        if name in series and str(month)[:7] in index:
            series[name][index[str(month)[:7]]] += count
    return {"labels": keys, "series": {k: v for k, v in series.items() if any(v)}}


def churn_by_type(rows, keys: list[str]) -> dict[str, list[int]]:
    """(month, properties) of Subscription Cancelled triggers → cancellations per month, split
    by their churn_type: involuntary (failed payment ended it) and voluntary (everything else,
    and cancellations from before the hub recorded why)."""
    split = {ev.VOLUNTARY: [0] * len(keys), ev.INVOLUNTARY: [0] * len(keys)}
    index = {k: i for i, k in enumerate(keys)}
    for month, props in rows:
        i = index.get(str(month)[:7])
        if i is not None:
            kind = (props or {}).get("churn_type")
            split[kind if kind in split else ev.VOLUNTARY][i] += 1
    return split


def error_rates(rows, days: list[date]) -> dict:
    """(at, connector, outcome) attempt rows → percent of attempts not accepted, per connector and day."""
    total: Counter = Counter()
    bad: Counter = Counter()
    names = set()
    first = days[0]
    for at, connector, outcome in rows:
        day = at.date()
        if day < first or day > days[-1]:
            continue
        names.add(connector)
        total[(connector, day)] += 1
        if outcome != "sent":
            bad[(connector, day)] += 1
    series = {}
    for name in sorted(names):
        series[name] = [round(100 * bad[(name, d)] / total[(name, d)], 1) if total[(name, d)] else None
                        for d in days]
    attempts = {name: sum(total[(name, d)] for d in days) for name in sorted(names)}
    failures = {name: sum(bad[(name, d)] for d in days) for name in sorted(names)}
    return {"labels": [d.isoformat() for d in days], "series": series, "attempts": attempts,
            "failures": failures}


def cohort_table(rows, as_of: datetime, months: int = 12) -> dict:
    """Retention by cohort: rows are (subscriber id, started_at, ended_at or None).

    A cohort is the month of a subscriber's first subscription; cell k is the share of the
    cohort holding a subscription at the end of the k-th month after (the running month: now).
    """
    spans: dict[int, list[tuple[datetime, datetime | None]]] = defaultdict(list)
    for subscriber_id, started_at, ended_at in rows:
        if subscriber_id is not None and started_at is not None:
            spans[subscriber_id].append((started_at, ended_at))
    cohorts: dict[str, list[int]] = defaultdict(list)
    for subscriber_id, items in spans.items():
        cohorts[month_key(min(s for s, _ in items))].append(subscriber_id)
    keys = [k for k in month_keys(as_of, months) if k in cohorts]
    table = []
    for key in keys:
        people = cohorts[key]
        cells = []
        for k in range(months):
            month = add_months(key, k)
            if month_end(add_months(month, -1)) > as_of:
                break  # that month has not begun
            at = min(month_end(month), as_of)  # the running month counts as of now
            alive = sum(1 for p in people if any(s < at and (e is None or e >= at) for s, e in spans[p]))
            cells.append(round(100 * alive / len(people)))
        table.append({"cohort": key, "size": len(people), "retention": cells})
    return {"columns": list(range(months)), "rows": table}


# The ledger of MRR movements ---------------------------------------------------------------

def _new_ledger() -> dict:
    return {"version": 1, "last_id": 0, "failed": [], "months": {}}


def refresh_ledger(storage, max_rows: int = LEDGER_STEP) -> dict:
    """Book the MRR movements of inbox rows not read yet; returns the ledger.

    Reads rows after `last_id` by primary key and stops at the first row still pending
    (its outcome is not known yet). Failed rows are remembered and booked once a replay
    processes them. The write is optimistic: if another process moved the ledger on
    meanwhile (its updated_at changed), this step is dropped and theirs kept.
    """
    with storage.session() as session:
        held = session.execute(select(Checkpoint.value, Checkpoint.updated_at)
                               .where(Checkpoint.name == LEDGER)).first()
        ledger = copy.deepcopy(held[0]) if held else _new_ledger()
        stamp = held[1] if held else None
        entries: list[dict] = []
        failed = list(ledger.get("failed") or [])
        if failed:
            still = []
            for start in range(0, len(failed), 500):
                chunk = failed[start:start + 500]
                states = {i: (s, o) for i, s, o in session.execute(
                    select(InboxEvent.id, InboxEvent.status, InboxEvent.outcome).where(InboxEvent.id.in_(chunk)))}
                for row_id in chunk:
                    status, outcome = states.get(row_id, (None, None))
                    if status in (FAILED, PENDING):
                        still.append(row_id)
                    elif outcome:
                        entries += outcome
            failed = still
        last = ledger.get("last_id", 0)
        rows = session.execute(select(InboxEvent.id, InboxEvent.status, InboxEvent.outcome)
                               .where(InboxEvent.id > last).order_by(InboxEvent.id).limit(max_rows)).all()
        for row_id, status, outcome in rows:
            if status == PENDING:
                break
            if status == FAILED:
                failed.append(row_id)
            elif outcome:
                entries += outcome
            last = row_id
        if last == ledger.get("last_id", 0) and failed == ledger.get("failed", []) and held:
            return ledger
        subscriptions = _subscriptions_of(session, {e.get("subscriber_id") for e in entries})
        for entry in entries:
            book(ledger["months"], mrr_moves(entry, subscriptions.get(entry.get("subscriber_id"), [])))
        ledger["last_id"] = last
        ledger["failed"] = failed[-5000:]  # a backlog that large is a problem the failed list shows
        _save(session, ledger, stamp, held is not None)
        return ledger


def _subscriptions_of(session: Session, ids) -> dict[int, list[dict]]:
    ids = sorted(i for i in ids if i is not None)
    found: dict[int, list[dict]] = defaultdict(list)
    for start in range(0, len(ids), 500):
        for s in session.execute(select(Subscription.subscriber_id, Subscription.plan, Subscription.source_id,
                                        Subscription.status, Subscription.amount, Subscription.interval,
                                        Subscription.interval_count, Subscription.currency)
                                 .where(Subscription.subscriber_id.in_(ids[start:start + 500]))):
            found[s.subscriber_id].append(dict(s._mapping))
    return found


def _save(session: Session, ledger: dict, stamp, exists: bool) -> bool:
    now = datetime.now(timezone.utc)
    if exists:
        result = session.execute(update(Checkpoint).where(Checkpoint.name == LEDGER, Checkpoint.updated_at == stamp)
                                 .values(value=ledger, updated_at=now))
        return result.rowcount == 1
    return insert_ignore(session, Checkpoint, {"name": LEDGER, "value": ledger, "updated_at": now},
                         ("name",)) == 1


def catch_up(storage, step: int = LEDGER_STEP) -> dict:
    """Refresh the ledger until it reaches the newest processed row (for a cron job)."""
    while True:
        before = _ledger_position(storage)
        ledger = refresh_ledger(storage, step)
        if ledger.get("last_id", 0) == before:
            return ledger


def _ledger_position(storage) -> int:
    with storage.session() as session:
        value = session.scalar(select(Checkpoint.value).where(Checkpoint.name == LEDGER))
    return (value or {}).get("last_id", 0)


# Queries ----------------------------------------------------------------------------------

def stage_figure(session: Session, as_of: datetime, days: int) -> dict:
    window = day_list(as_of, days)
    start = datetime.combine(window[0], datetime.min.time(), tzinfo=timezone.utc)
    first_day = utc_day(session, Subscriber.first_seen_at)
    base = session.execute(select(Subscriber.stage, first_day, func.count())
                           .where(Subscriber.erased_at.is_(None)).group_by(Subscriber.stage, first_day)).all()
    moves = defaultdict(list)
    for subscriber_id, due_at, properties in session.execute(
            select(Trigger.subscriber_id, Trigger.due_at, Trigger.properties)
            .where(Trigger.status.in_(("fired", "skipped")), Trigger.due_at >= start,
                   Trigger.name == "Stage Changed")):
        properties = properties or {}
        moves[subscriber_id].append((due_at.date(), properties.get("from"), properties.get("to")))
    movers = {}
    ids = sorted(moves)
    for chunk_start in range(0, len(ids), 500):
        for sid, first_seen, stage in session.execute(
                select(Subscriber.id, Subscriber.first_seen_at, Subscriber.stage)
                .where(Subscriber.id.in_(ids[chunk_start:chunk_start + 500]), Subscriber.erased_at.is_(None))):
            movers[sid] = (first_seen.date() if first_seen else None, stage, moves[sid])
    return {"labels": [d.isoformat() for d in window],
            "series": stage_series(window, [(s, d, n) for s, d, n in base], movers)}


def connector_figure(session: Session, settings, queues=None) -> dict:
    names = list(connectors.CONNECTORS)
    counts = {(c, s): n for c, s, n in session.execute(
        select(Delivery.connector, Delivery.status, func.count())
        .where(Delivery.connector.in_(names), Delivery.status.in_((QUEUED, RETRYING, DEAD)))
        .group_by(Delivery.connector, Delivery.status))}
    enabled = {name for name, on, _ in connectors.configured(settings) if on}
    shown = [n for n in names if n in enabled or any(counts.get((n, s)) for s in (QUEUED, RETRYING, DEAD))]
    try:
        rq = queues.depth() if queues is not None else {}
    except Exception:  # Redis down: the page says so instead of failing
        rq = None
    return {"names": shown, "queued": [counts.get((n, QUEUED), 0) for n in shown],
            "retrying": [counts.get((n, RETRYING), 0) for n in shown],
            "dead": [counts.get((n, DEAD), 0) for n in shown], "rq": rq}


def build(session: Session, storage, settings, queues=None, as_of: datetime | None = None,
          days: int = 90, months: int = 12) -> dict:
    """Every figure of the dashboard, JSON-ready."""
    as_of = utc(as_of) or datetime.now(timezone.utc)
    keys = month_keys(as_of, months)
    ledger = refresh_ledger(storage)
    latest = session.scalar(select(func.max(InboxEvent.id))) or 0
    fallback = session.scalar(select(Subscription.currency).where(Subscription.currency.is_not(None)).limit(1))
    currency = main_currency(ledger["months"], fallback) or "USD"
    mrr = mrr_series(ledger["months"], keys, currency)
    as_money = {k: [_major(v, currency) for v in mrr[k]] for k in ("mrr", *MOVEMENTS)}
    mrr_figure = {"labels": keys, **as_money, "current": str(Money(int(mrr["mrr"][-1]), currency)),
                  "currency": currency,
                  "other_currencies": sorted({c for cells in ledger["months"].values() for c in cells} - {currency})}
    churn_figure = {"labels": keys, "rate": mrr["churn_rate"], "churned": mrr["churned"],
                    "paying_at_start": mrr["paying_at_start"]}

    window_days = rules.current_params(settings).dunning.recovery_days
    start = month_end(add_months(keys[0], -1))
    payments = session.execute(select(Payment.first_failed_at, Payment.paid_at, Payment.status)
                               .where(Payment.first_failed_at >= start, Payment.first_failed_at <= as_of)).all()
    paid_after_failing = session.execute(
        select(Payment.paid_at, Payment.amount, Payment.currency)
        .where(Payment.status == "succeeded", Payment.first_failed_at.is_not(None),
               Payment.paid_at >= start, Payment.paid_at <= as_of)).all()
    mrr_figure.update(revenue_churn=mrr["revenue_churn"], net_retention=mrr["net_retention"],
                      recovered=[_major(v, currency) for v in recovered_revenue(paid_after_failing, keys, currency)])
    month = utc_month(session, Trigger.due_at)
    reminder_rows = session.execute(select(Trigger.name, month, func.count())
                                    .where(Trigger.status == "fired", Trigger.due_at >= start,
                                           Trigger.due_at <= as_of, Trigger.name.in_(REMINDERS))
                                    .group_by(Trigger.name, month)).all()
    cancelled = session.execute(select(month, Trigger.properties)
                                .where(Trigger.name == "Subscription Cancelled", Trigger.status == "fired",
                                       Trigger.due_at >= start, Trigger.due_at <= as_of)).all()
    churn_figure.update(churn_by_type(cancelled, keys))
    error_days = day_list(as_of, 14)
    attempts = session.execute(select(DeliveryAttempt.at, Delivery.connector, DeliveryAttempt.outcome)
                               .join(Delivery, Delivery.id == DeliveryAttempt.delivery_id)
                               .order_by(DeliveryAttempt.id.desc()).limit(ATTEMPT_SAMPLE)).all()
    spans = [(sid, started, ended if ended is not None else (updated if status in ENDED else None))
             for sid, started, ended, updated, status in session.execute(
                 select(Subscription.subscriber_id, Subscription.started_at, Subscription.canceled_at,
                        Subscription.source_updated_at, Subscription.status))]
    return {
        "as_of": iso(as_of),
        "stages": stage_figure(session, as_of, days),
        "mrr": mrr_figure,
        "churn": churn_figure,
        "recovery": {**recovery_by_month(payments, keys, as_of, window_days), "window_days": window_days},
        "reminders": reminders_by_month(reminder_rows, keys),
        "connectors": connector_figure(session, settings, queues),
        "errors": error_rates(attempts, error_days),
        "cohorts": cohort_table(spans, as_of, months),
        "reconciliation": _recovered(session),
        "consent": last_report(session),
        "registrations": _registrations(session, settings),
        "refused": refused_webhooks(queues),
        "unanswered_retries": unanswered_retry_counts(session),
        "known_by_ids_alone": dict(session.execute(
            select(Subscription.source, func.count()).where(Subscription.known_by_ids_alone)
            .group_by(Subscription.source)).all()),
        "own_retry_schedules": {source: {**found, "at": iso(found["at"])}
                                for source, found in retries.own_schedules(session, settings, as_of).items()},
        "ledger": {"counted_to": ledger.get("last_id", 0), "latest": latest,
                   "failed_waiting": len(ledger.get("failed") or [])},
    }


def _registrations(session: Session, settings) -> dict:
    """Missing webhook registrations found by the hourly check (hub.ops.registrations.record_watch).

    No platform can post to a loopback HUB_BASE_URL: such a hub is fed from its own machine
    (the demo, tests), so a registration at Shopify or Stripe is not expected, nor missing.
    """
    if is_loopback(settings.HUB_BASE_URL):
        return {"checked_at": None, "problems": [], "loopback": settings.HUB_BASE_URL}
    held = session.get(Checkpoint, REGISTRATIONS)
    value = held.value if held else {}
    return {"checked_at": value.get("checked_at"), "problems": value.get("problems", []), "loopback": None}


def refused_webhooks(queues) -> list[dict]:
    """Each source whose webhooks the hub refused for their signature in the last 24 hours:
    {"source", "count", "reason" (the last one's), "at", "settings" (the secret it checks
    with)}. Nothing when Redis, which counts them, does not answer."""
    if queues is None:
        return []
    try:
        found = queues.refused(SOURCES)
    except Exception:  # noqa: BLE001 - Redis down: /healthz says so; the dashboard still renders
        return []
    return [{"source": name, "count": held["count"], "reason": held["reason"],
             "at": iso(datetime.fromtimestamp(held["at"], timezone.utc)) if held.get("at") else None,
             "settings": list(SOURCES[name].secret_settings)}
            for name, held in sorted(found.items())]


def is_loopback(url: str | None) -> bool:
    """Whether a URL names this machine (localhost, 127.0.0.0/8, ::1)."""
    host = urlsplit(url or "").hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def _recovered(session: Session) -> dict:
    """Changes reconciliation recovered: a running total it keeps in the checkpoint table."""
    return recovered_total(session)


def _major(minor: int, currency: str) -> float:
    return float(Money(int(minor), currency).to_decimal())


_cache: dict = {}
_cache_lock = threading.Lock()


def cached(hub, as_of: datetime | None = None, days: int = 90, months: int = 12) -> dict:
    """build() at most once per CACHE_SECONDS per hub and arguments (the page is read often)."""
    key = (id(hub), hub.settings.DATABASE_URL, as_of.isoformat() if as_of else None, days, months)
    with _cache_lock:
        hit = _cache.get(key)
        if hit and hit[0] > time.monotonic():
            return hit[1]
    with hub.storage.session() as session:
        data = build(session, hub.storage, hub.settings, hub.queues, as_of=as_of, days=days, months=months)
    with _cache_lock:
        if len(_cache) > 32:
            _cache.clear()
        _cache[key] = (time.monotonic() + CACHE_SECONDS, data)
    return data


__all__ = [
    "build",
    "cached",
    "catch_up",
    "cohort_table",
    "error_rates",
    "monthly",
    "movement",
    "mrr_moves",
    "mrr_series",
    "recovery_by_month",
    "refresh_ledger",
    "reminders_by_month",
    "stage_series",
]
