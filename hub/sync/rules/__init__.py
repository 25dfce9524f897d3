"""The rule layer: subscriber state + `now` → triggers, each stored once.

`on_event` runs after the worker applies an event (event rules, plus every time rule
that falls due today for that subscriber, so nothing waits for tomorrow's sweep);
`sweep` runs every time rule as of an instant over the whole base with indexed range
queries (RQ cron, `hub sweep --at`). The rules themselves (one module per family) are
pure; this module only reads state, calls them and stores what they return.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from hub import events as ev
from hub.db.dialect import one_of, upsert
from hub.models import Checkpoint, CustomerLink, Subscriber, Subscription, Trigger, now_utc
from hub.models.link import RENEW, UPDATE_PAYMENT
from hub.sync import retries
from hub.sync.rules import (
    card_expiry,
    dunning,
    lifecycle,
    loyalty,
    moments,
    queries,
    renewal,
    stock,
    trial,
    upsell,
    welcome,
    winback,
)
from hub.sync.rules import params as params_
from hub.sync.rules.params import RuleParams
from hub.sync.rules.state import (
    CANCELLED,
    ENDED,
    FIRED,
    SKIPPED,
    Due,
    SubscriberState,
    Window,
    local_day,
)
from hub.sync.triggers import insert_unique, insert_unique_bulk, trigger_row
from webhooks import SOURCES

# Rule families by name (mappings/rules.yaml has one section each).
RULES = {"lifecycle": lifecycle, "welcome": welcome, "renewal": renewal, "trial": trial,
         "dunning": dunning, "card_expiry": card_expiry, "upsell": upsell, "loyalty": loyalty,
         "winback": winback, "stock": stock}
CHECKPOINT = "rules.sweep"



def configure(settings=None) -> RuleParams:
    """Load and validate rules.yaml at start (ConfigError names a bad key), so a bad file
    stops a process before it misfires reminders."""
    return current_params(settings)


def current_params(settings=None) -> RuleParams:
    """The rule parameters of these settings' mappings folder (read once, then cached), or
    of the project's own mappings/rules.yaml without settings.

    Settings travel as arguments: the platform calls at the rules' edges (update-payment
    links, orchestrated retries, inventory items) use the keys of the settings they are given."""
    if settings is not None:
        return params_.load_dir(settings.HUB_MAPPINGS_DIR)
    return params_.load_cached(str(params_.DEFAULT_PATH))


# --- event path -----------------------------------------------------------------------


def on_event(session: Session, subscriber: Subscriber, event, changes, now: datetime,
             inbox_event_id: int | None = None, history: bool = False,
             params: RuleParams | None = None, settings=None) -> list[Trigger]:
    """Rules for one applied event; returns the newly stored triggers to send (status fired).

    With `history` (backfill) every trigger is stored as skipped: it records what the hub
    would have decided without emailing anyone about the past.
    """
    p = params or current_params(settings)
    if subscriber is None or subscriber.erased_at is not None:
        return []
    event_rules = EVENT_RULES.get(event.name, ())
    # The rules read the subscriber from memory; only rows they read without ids yet and
    # the event rules' own queries need the session written out first. Not flushing for
    # every profile event leaves one write per subscriber for the whole drained batch.
    if event_rules or subscriber.id is None or _unnumbered(subscriber):
        session.flush()
    s = queries.subscriber_state(subscriber)
    dues = []
    for rule in (*event_rules, *PROFILE_RULES.get(event.name, ())):
        dues += rule(session, s, event, changes, now, p)
    dues += evaluate_subscriber(session, subscriber, s, now, p, changes=changes)
    dues += time_rules(s, Window.today(now, p.tz), now, p, notice=NOTICES.get(event.name, ()))
    fired = store(session, subscriber.id, dues, inbox_event_id, history, settings)
    if p.dunning.mode == "orchestrate":
        _retry_with_new_card(session, s, fired, now)
    return fired


def _retry_with_new_card(session: Session, s: SubscriberState, fired: list[Trigger], now: datetime) -> None:
    """Orchestrate mode: a new card while a payment is owed asks the platform to retry it,
    once the trigger is committed (hub.sync.retries; the trigger's key is the idempotency key)."""
    retries.plan(session, [(t.id, pay.id, t.reason) for t in fired
                           if t.name == ev.PAYMENT_METHOD_UPDATED_TRIGGER
                           for pay in s.payments if pay.source_id == (t.properties or {}).get("dunning_payment_id")
                           and pay.source == t.properties.get("source")], now)


def _unnumbered(subscriber: Subscriber) -> bool:
    return any(x.id is None for x in subscriber.subscriptions) or any(x.id is None for x in subscriber.payments)


def evaluate_subscriber(session: Session, subscriber: Subscriber, s: SubscriberState, now: datetime,
                        p: RuleParams, changes=None) -> list[Due]:
    """Points, tier, stage and health written on the subscriber; Tier/Stage Changed and
    Upsell Opportunity when due. Also the entry point for usage reports (POST /api/usage)."""
    def put(attr, value):
        if changes is not None:
            changes.set(subscriber, attr, value, "rules")
        else:
            setattr(subscriber, attr, value)

    dues = []
    points = loyalty.points(s.lifetime_spend, s.currency, p)
    tier, moved = loyalty.tier_changed(s, points, now, p)
    put("loyalty_points", points)
    put("tier", tier)
    dues += [moved] if moved else []
    a = lifecycle.assess(s, now, p)
    changed = lifecycle.stage_changed(s, a, now)
    dues += [changed] if changed else []
    put("stage", a.stage)
    put("stage_reason", a.reason)
    put("health_score", a.health)
    dues += upsell.opportunities(s, a.stage, now, p)
    return dues


def on_usage(session: Session, subscriber: Subscriber, now: datetime,
             params: RuleParams | None = None, settings=None) -> list[Trigger]:
    """After POST /api/usage appended to subscriber.usage: the upsell (and stage) rules."""
    p = params or current_params(settings)
    session.flush()
    s = queries.subscriber_state(subscriber)
    return store(session, subscriber.id, evaluate_subscriber(session, subscriber, s, now, p), None, False,
                 settings)


def time_rules(s: SubscriberState, window: Window, now: datetime, p: RuleParams,
               notice: tuple[str, ...] = ()) -> list[Due]:
    """Every time rule for one subscriber over the window (the sweep's rules, per person)."""
    dues = []
    for sub in s.subscriptions:
        dues += renewal.reminders(sub, window, now, p)
        dues += trial.ending(sub, window, now, p, notice="trial" in notice)
        dues += moments.renew_now(sub, window, now, p)
    for pay in s.payments:
        dues += dunning.due(pay, window, now, p)
    dues += card_expiry.expiring(s, window, now, p, notice="card" in notice)
    dues += welcome.later_steps(s, window, p)
    dues += winback.win_back(s, window, p)
    return dues


def _sub_of(s: SubscriberState, event):
    ref = f"{event.source}:{event.data.get('source_id')}"
    return next((x for x in s.subscriptions if x.ref == ref), None)


def _subscription_rules(session, s, event, changes, now, p):
    sub = _sub_of(s, event)
    if sub is None or not sub.began:
        return []
    dues = []
    # Begun by this event: created live, or live for the first time (its first payment came).
    begun_now = any(c.get("field") in ("created", "started_at") and str(c.get("what", "")).startswith("subscription")
                    for c in changes.changed)
    if begun_now and sub.is_live:
        dues.append(welcome.started(sub))
        dues += [d for d in [welcome.first_step(s, sub.ref, p)] if d]
    # Only a cancellation this event made: an old one first seen now is history, not news.
    ended = event.name == ev.SUBSCRIPTION_CANCELED or any(
        c.get("field") == "status" and c.get("to") in ENDED for c in changes.changed)
    if ended:
        dues += [d for d in [winback.cancelled(sub, now, p, moments.why_cancelled(s, sub, event))] if d]
    before = moments.was(changes)
    was_paused = any(occ.endswith("/" + sub.ref) for _, occ, _ in
                     queries.held_triggers(session, s.id, moments.PAUSED_RULE)) if before.get("status") else False
    dues += [d for d in [moments.plan_changed(sub, before, event),
                         moments.paused_or_resumed(sub, before, event, was_paused),
                         moments.renewal_skipped(sub, before, event)] if d]
    held = [h for h in queries.held_triggers(session, s.id, renewal.PREFIX)
            if renewal.is_reminder(h[0]) and h[1].endswith("/" + sub.ref)]
    cancel, reinstate = renewal.reconcile(sub, held, now, p)
    for rule_, occasion in reinstate:
        session.execute(delete(Trigger).where(Trigger.subscriber_id == s.id, Trigger.rule == rule_,
                                              Trigger.occasion == occasion, Trigger.status == CANCELLED))
    return dues + cancel


def _payment_rules(session, s, event, changes, now, p):
    pay = queries.payment(session, event.source, changes.payment_source_id or event.data.get("source_id"))
    if pay is None:
        return []
    found = dunning.failed(pay, now, p) if event.name != ev.PAYMENT_SUCCEEDED else dunning.recovered(pay, p)
    return [found] if found else []


def _card_rules(session, s, event, changes, now, p):
    return [d for d in [moments.payment_method_updated(s, event, changes)] if d]


EVENT_RULES = {
    ev.SUBSCRIPTION_UPSERTED: (_subscription_rules,),
    ev.SUBSCRIPTION_CANCELED: (_subscription_rules,),
    ev.PAYMENT_FAILED: (_payment_rules,),
    ev.PAYMENT_ACTION_REQUIRED: (_payment_rules,),
    ev.PAYMENT_SUCCEEDED: (_payment_rules,),
    ev.PAYMENT_METHOD_UPDATED: (_card_rules,),
}
# Event rules that read only the subscriber in memory, so a profile event is not flushed for them.
PROFILE_RULES = {ev.CUSTOMER_UPSERTED: (_card_rules,)}
# The platform's own notice means "now": it also takes a due day the sweeps passed by.
NOTICES = {ev.TRIAL_ENDING: ("trial",), ev.PAYMENT_METHOD_EXPIRING: ("card",)}


def item_products(settings, source: str, item_id: str) -> dict:
    """Product and variant ids of an inventory item ({} when the source cannot tell).

    A lookup that fails raises, rather than the stock rule silently finding nobody: a platform
    that did not answer (RetryLater) leaves the inbox row waiting to try again by itself, a
    refusal marks it failed for `hub replay --failed`.
    """
    found = SOURCES.get(source)
    lookup = found.item_products if found is not None else None
    if settings is None or lookup is None or not item_id:
        return {}
    return lookup(settings, item_id) or {}


def on_inventory(session: Session, event, now: datetime, inbox_event_id: int | None = None,
                 history: bool = False, params: RuleParams | None = None, settings=None) -> list[Trigger]:
    """Out Of Stock / Back In Stock for an inventory.changed event (it names no subscriber)."""
    p = params or current_params(settings)
    d = event.data
    item = {k: d.get(k) for k in ("product_id", "variant_id", "inventory_item_id")}
    if not p.stock.enabled:
        return []
    if d.get("inventory_item_id") and not (item["product_id"] or item["variant_id"]):
        # The webhook names a stock-keeping item; shipments list products and variants.
        item.update(item_products(settings, event.source, str(d["inventory_item_id"])))
    ids = [str(v) for v in item.values() if v]
    if not ids:
        return []
    created = []
    for sub in queries.stock_holders(session, ids):
        outs = {occ for _, occ, _ in queries.held_triggers(session, sub.subscriber_id, stock.OUT)}
        key = str(item.get("variant_id") or item.get("product_id") or item.get("inventory_item_id"))
        was_out = sub.next_renewal_at is not None and stock.occasion(sub, key, p) in outs
        due = stock.stock_change(sub, item, d.get("available"), now, p, was_out)
        if due:
            created += store(session, sub.subscriber_id, [due], inbox_event_id, history, settings)
    return created


# Events that name no subscriber, and the rule entry point that finds whom they concern.
WITHOUT_SUBSCRIBER = {ev.INVENTORY_CHANGED: on_inventory}


def store(session: Session, subscriber_id: int, dues: list[Due], inbox_event_id: int | None,
          history: bool, settings=None) -> list[Trigger]:
    """Insert the specs (once per key); the newly inserted rows with status fired."""
    rows, seen = [], set()
    for due in dues:
        if (due.rule, due.occasion) in seen:
            continue
        seen.add((due.rule, due.occasion))
        status = SKIPPED if history and due.status == FIRED else None
        rows.append(trigger_row(subscriber_id, due, inbox_event_id, status))
    fired = [t for t in insert_unique(session, rows) if t.status == FIRED] if rows else []
    linked = link_properties(session, [(t.id, t.subscriber_id, t.name, t.properties) for t in fired], settings)
    for t in fired:
        if t.id in linked:
            t.properties = linked[t.id]
    return fired


def linked_sources(settings) -> frozenset[str]:
    """Sources configured to make a customer's page behind a hub link (others keep the
    platform's own link from the payload, if any)."""
    return frozenset(name for name, source in SOURCES.items()
                     if source.customer_page is not None and source.linkable(settings))


# Triggers that carry a hub link: (what the link lets the customer do, the property it goes in).
# Those asking to pay or replace a card carry an update-payment link; Renew Now one to keep
# the subscription running.
LINKED = {**dict.fromkeys(("Payment Failed", "Payment Reminder", "Payment Retry Scheduled", "Card Expiring"),
                          (UPDATE_PAYMENT, "update_payment_url")),
          ev.RENEW_NOW: (RENEW, "renew_url")}


def link_properties(session: Session, rows: list[tuple[int, int, str, dict]], settings) -> dict[int, dict]:
    """Properties with the update-payment link of each newly stored trigger that needs one
    (rows: trigger id, subscriber id, name, properties); {trigger id: properties}.

    The link is a stable hub URL, `{HUB_BASE_URL}/l/<token>`, stored with the trigger (one
    per trigger: a sweep run twice or a repeated webhook inserts no trigger, so no link).
    Nothing is asked of the platform here: platform pages such as Stripe's portal sessions
    expire within minutes, so hub.web.links makes one when the customer clicks, weeks later.
    A subscriber whose platform customer id is unknown keeps the payload's own link.
    """
    rows = [r for r in rows if r[2] in LINKED and (r[3] or {}).get("source")]
    if settings is None or not rows:
        return {}
    sources = {r[3]["source"] for r in rows} & linked_sources(settings)
    columns = [PERSON.c[f"{x}_customer_id"] for x in sorted(sources) if f"{x}_customer_id" in PERSON.c]
    if not columns:
        return {}
    people: dict[int, dict] = {}
    ids = sorted({r[1] for r in rows})
    for i in range(0, len(ids), queries.CHUNK):
        chunk = ids[i:i + queries.CHUNK]
        for person in session.execute(select(PERSON.c.id, *columns).where(one_of(session, PERSON.c.id, chunk))):
            people[person.id] = dict(person._mapping)
    base = f"{settings.HUB_BASE_URL.rstrip('/')}/l/"
    links, out = [], {}
    for trigger_id, subscriber_id, name, props in rows:
        source = props["source"]
        customer = (people.get(subscriber_id) or {}).get(f"{source}_customer_id")
        if not customer:
            continue
        token = secrets.token_urlsafe(24)  # 192 random bits: unguessable, and it says nothing
        purpose, key = LINKED[name]
        links.append({"token": token, "trigger_id": trigger_id, "subscriber_id": subscriber_id,
                      "purpose": purpose, "source": source, "customer_id": customer,
                      "subscription_id": props.get("subscription_id"), "created_at": now_utc()})
        out[trigger_id] = {**props, key: base + token}
    if links:
        session.execute(insert(CustomerLink), links)
    return out


PERSON = Subscriber.__table__


# --- sweep ----------------------------------------------------------------------------


@dataclass
class SweepReport:
    """What a sweep did: counts per rule family, new fired trigger ids (for the outbox),
    subscribers whose stage, score or tier changed (profile updates)."""

    window: Window
    counts: dict[str, int] = field(default_factory=dict)
    trigger_ids: list[int] = field(default_factory=list)
    subscriber_ids: set[int] = field(default_factory=set)
    # Whose keys the sweep's hub links are made with; None makes none.
    settings: object = None

    def add(self, family: str, inserted: list[tuple]) -> list[tuple]:
        fired = [r for r in inserted if r[4] == FIRED]
        self.counts[family] = self.counts.get(family, 0) + len(fired)
        self.trigger_ids += [r[0] for r in fired]
        return inserted


def sweep(session: Session, settings, now: datetime, params: RuleParams | None = None) -> dict[str, int]:
    """Run every time rule as of `now`; returns fired triggers per rule family."""
    return run_sweep(session, now, params or current_params(settings), settings).counts


def run_sweep(session: Session, now: datetime, p: RuleParams, settings=None) -> SweepReport:
    """The sweep, with everything the caller may hand on to the outbox."""
    window = sweep_window(session, now, p)
    report = SweepReport(window, counts={name: 0 for name in (*SWEEPS, "upsell")}, settings=settings)
    for day in window.days():
        one = Window(day, day, p.tz)
        for name, run in SWEEPS.items():
            run(session, one, now, p, report)
    _save_checkpoint(session, window.last, now)
    return report


def sweep_window(session: Session, now: datetime, p: RuleParams) -> Window:
    """Today, plus the days since the last sweep that no sweep covered (capped)."""
    today = local_day(now, p.tz)
    held = session.get(Checkpoint, CHECKPOINT)
    last = date.fromisoformat(held.value["day"]) if held and held.value.get("day") else None
    first = today
    if last is not None and last < today:
        first = max(last + timedelta(days=1), today - timedelta(days=p.max_catch_up_days))
    return Window(first, today, p.tz)


def _save_checkpoint(session: Session, day: date, now: datetime) -> None:
    value = {"day": day.isoformat(), "at": now.isoformat()}
    # Two sweeps at once: the later day wins is not needed; either value is a covered day.
    upsert(session, Checkpoint, {"name": CHECKPOINT, "value": value, "updated_at": now_utc()}, ("name",),
           {"value": value, "updated_at": now_utc()})


def _bulk(session, report, family, pairs: list[tuple[int, Due]]) -> list[tuple]:
    rows, seen = [], set()
    for subscriber_id, due in pairs:
        key = (subscriber_id, due.rule, due.occasion)
        if key not in seen:
            seen.add(key)
            rows.append(trigger_row(subscriber_id, due))
    # In key order the unique index is written page after page, not at random.
    rows.sort(key=lambda r: (r["subscriber_id"], r["rule"], r["occasion"]))
    inserted = report.add(family, insert_unique_bulk(session, rows)) if rows else []
    if report.settings is not None and inserted and family in LINKED_FAMILIES:
        by_key = {(r["subscriber_id"], r["rule"], r["occasion"]): r for r in rows}
        linked = link_properties(session, [(i, sid, by_key[(sid, rule_, occ)]["name"],
                                            by_key[(sid, rule_, occ)]["properties"])
                                           for i, sid, rule_, occ, status in inserted if status == FIRED],
                                 report.settings)
        if linked:
            t = Trigger.__table__
            session.execute(update(t).where(t.c.id == bindparam("b_id")).values(properties=bindparam("b_props")),
                            [{"b_id": i, "b_props": props} for i, props in linked.items()])
    return inserted


LINKED_FAMILIES = ("dunning", "card_expiry", "renew_now")


def _sweep_renewal(session, w, now, p, report):
    for offset in p.renewal.offsets_days:
        subs = queries.subscriptions_between(session, Subscription.next_renewal_at, w.span(offset),
                                             renewal.sweep_statuses(p))
        _bulk(session, report, "renewal", [(x.subscriber_id, d) for x in subs
                                           for d in renewal.reminders(x, w, now, p)])


def _sweep_renew_now(session, w, now, p, report):
    for offset in p.renewal.offsets_days:
        subs = queries.ending_between(session, w.span(offset)) + queries.last_charge_between(session, w.span(offset))
        _bulk(session, report, "renew_now", [(x.subscriber_id, d) for x in subs
                                             for d in moments.renew_now(x, w, now, p)])


def _sweep_trial(session, w, now, p, report):
    subs = queries.subscriptions_between(session, Subscription.trial_end, w.span(p.trial.days_before),
                                         ("trialing",))
    _bulk(session, report, "trial", [(x.subscriber_id, d) for x in subs for d in trial.ending(x, w, now, p)])


def _sweep_dunning(session, w, now, p, report):
    days = dunning.reminder_days(p)
    if not days:
        return
    start, _ = w.span(-max(days))
    _, end = w.span(-min(days))
    found = [(x, d) for x in queries.open_payments(session, start, end) for d in dunning.due(x, w, now, p)]
    inserted = _bulk(session, report, "dunning", [(x.subscriber_id, d) for x, d in found])
    if p.dunning.mode == "orchestrate":
        # The new retry trigger is the once-only guard of the platform call: a sweep run twice
        # (or by two workers) inserts it once, and only its inserter plans the ask.
        due = {(x.subscriber_id, d.occasion): (x.id, d.reason) for x, d in found if d.rule == dunning.RETRY}
        retries.plan(session, [(i, *due[(sid, occ)]) for i, sid, rule_, occ, status in inserted
                               if rule_ == dunning.RETRY and status == FIRED], now)


def _sweep_welcome(session, w, now, p, report):
    spans = [w.span(-d) for d in p.welcome.days if d > 0]
    ids = queries.started_between(session, spans)
    _bulk(session, report, "welcome", [(s.id, d) for s in queries.subscriber_states(session, ids, payments=False)
                                       for d in welcome.later_steps(s, w, p)])


def _sweep_winback(session, w, now, p, report):
    ids = queries.ended_between(session, w.span(-p.winback.days_after_cancel))
    _bulk(session, report, "winback", [(s.id, d) for s in queries.subscriber_states(session, ids, payments=False)
                                       for d in winback.win_back(s, w, p)])


def _sweep_card_expiry(session, w, now, p, report):
    months = card_expiry.due_months(w, p) if p.card_expiry.enabled else []
    if not months:
        return  # warnings fall on one day a month
    ids = [i for i, cards in queries.card_holders(session, months) if card_expiry.any_due(cards or {}, w, p)]
    _bulk(session, report, "card_expiry", [(s.id, d) for s in queries.subscriber_states(session, ids, payments=False)
                                           for d in card_expiry.expiring(s, w, now, p)])


def _sweep_lifecycle(session, w, now, p, report):
    """Recency decay: recompute stage, score and tier where a day boundary is crossed."""
    ids = queries.lifecycle_candidates(session, w, p.lifecycle.boundaries(), p.lifecycle.new_days)
    stages, upsells, updates = [], [], []
    for s in queries.subscriber_states(session, ids):
        a = lifecycle.assess(s, now, p)
        if a.stage != s.stage or a.health != s.health_score:
            updates.append({"b_id": s.id, "b_stage": a.stage, "b_health": a.health, "b_reason": a.reason})
            report.subscriber_ids.add(s.id)
        changed = lifecycle.stage_changed(s, a, now)
        stages += [(s.id, changed)] if changed else []
        upsells += [(s.id, d) for d in upsell.opportunities(s, a.stage, now, p)]
    if updates:
        t = Subscriber.__table__
        session.execute(update(t).where(t.c.id == bindparam("b_id")).values(
            stage=bindparam("b_stage"), health_score=bindparam("b_health"),
            stage_reason=bindparam("b_reason"), updated_at=now_utc()), updates)
    _bulk(session, report, "lifecycle", stages)
    _bulk(session, report, "upsell", upsells)


# Time rules by family; lifecycle last so it sees the day's other changes. Upsell counts
# its renewal-reason opportunities found by the lifecycle pass.
SWEEPS = {"renewal": _sweep_renewal, "renew_now": _sweep_renew_now, "trial": _sweep_trial, "dunning": _sweep_dunning,
          "card_expiry": _sweep_card_expiry, "welcome": _sweep_welcome, "winback": _sweep_winback,
          "lifecycle": _sweep_lifecycle}
