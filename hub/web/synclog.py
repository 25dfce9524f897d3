"""The sync log pages for support staff: search, a subscriber's story, lists, the dashboard.

Every page needs a logged-in staff user; viewers read, operators also retry, replay and
resend (POSTs, each checked for its CSRF token). Lists mask emails and phones; the
subscriber page shows the person's details whole. Words, not codes: statuses, times and
amounts are written the way a support agent would say them.
"""
from __future__ import annotations

from datetime import datetime

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_wtf.csrf import CSRFError
from sqlalchemy import select

from hub.masking import mask_email, mask_phone, mask_text, scrub_body, scrub_headers
from hub.models import (
    CANCELLED,
    DEAD,
    FAILED,
    IGNORED,
    INTERRUPTED,
    PENDING,
    PROCESSED,
    QUEUED,
    RETRYING,
    SENT,
    Delivery,
    InboxEvent,
    Subscriber,
)
from hub.ops import consent, dashboard, support, synclog
from hub.ops.replay import run as run_replay
from hub.ops.replay import select_events
from hub.sync import readmodel, rules
from hub.values import money_text, row_id, utc
from hub.web import current_hub
from hub.web.auth import csrf_refused, load_staff, login_manager, operator_required
from webhooks import SOURCE_NAMES, get_source

bp = Blueprint("synclog", __name__, url_prefix="/sync-log")

PAGE_SIZE = 50
EARLIEST_FILTER_YEAR, LATEST_FILTER_YEAR = 1970, 9998
TOOLS = {"klaviyo": "Klaviyo", "hubspot": "HubSpot", "activecampaign": "ActiveCampaign",
         "webhook": "the outbound webhook"}
SOURCES = {"shopify": "Shopify", "stripe": "Stripe", "chargebee": "Chargebee", "recharge": "Recharge",
           "shopify_inferred": "Shopify, inferred from selling-plan orders"}


@bp.before_request
def _staff_only():
    if load_staff() is None:
        return login_manager.unauthorized()
    return None


bp.register_error_handler(CSRFError, csrf_refused)  # before the page's own 400 handler


@bp.errorhandler(400)
@bp.errorhandler(403)
@bp.errorhandler(404)
def _error(exc):
    return render_template("error.html", error=exc), exc.code


# Words ------------------------------------------------------------------------------------

def tool_name(connector: str | None) -> str:
    return TOOLS.get(connector or "", (connector or "a tool").title())


def source_name(source: str | None) -> str:
    return SOURCES.get(source or "", source or "")


def when(value) -> str:
    """`23 Nov 2026, 14:02 UTC`: readable, and the same for every reader wherever they are."""
    value = utc(value) if value is not None else None
    if value is None:
        return "—"
    return f"{value.day} {value:%b %Y, %H:%M} UTC"


def clock(value, reference=None) -> str:
    """`14:02`, with the date when it is not the reference's day."""
    value, reference = utc(value), utc(reference) if reference is not None else None
    if value is None:
        return "—"
    if reference is not None and value.date() == reference.date():
        return f"{value:%H:%M}"
    return f"{value.day} {value:%b}, {value:%H:%M}"


def seconds(value: float | None) -> str:
    """12 → `12 s`, 150 → `2 min 30 s`, 7200 → `2 h`."""
    if value is None:
        return "a moment"
    value = round(value)
    if value < 60:
        return f"{value} s"
    if value < 3600:
        minutes, rest = divmod(value, 60)
        return f"{minutes} min" + (f" {rest} s" if rest else "")
    hours, rest = divmod(value, 3600)
    return f"{hours} h" + (f" {rest // 60} min" if rest // 60 else "")


def money(amount, currency) -> str:
    if amount is None:
        return "—"
    if not currency:
        return f"{amount} (minor units, currency unknown)"
    return money_text(amount, currency) or f"{amount} {currency}"


def order_line(line, currency: str | None) -> str:
    """An order line as a person reads it: `Roaster's Choice × 2 at 54.00 USD`."""
    if not isinstance(line, dict):
        return str(line)
    text = f"{line.get('title') or line.get('product_id') or 'item'} × {line.get('quantity') or 1}"
    return text + (f" at {money(line['price'], currency)}" if line.get("price") is not None else "")


def every(interval: str | None, count: int | None) -> str:
    if not interval:
        return ""
    count = count or 1
    return f"per {interval}" if count == 1 else f"every {count} {interval}s"


SUBSCRIPTION_WORDS = {"trialing": "in trial", "active": "active", "past_due": "payment overdue",
                      "paused": "paused", "canceled": "cancelled", "expired": "ended",
                      "incomplete": "awaiting its first payment"}
PAYMENT_WORDS = {"succeeded": "paid", "failed": "failed", "action_required": "waiting for the customer "
                 "to confirm (3-D Secure)", "new": "new",
                 "retries_exhausted": "failed, no retry to come", "void": "voided",
                 "uncollectible": "written off"}
EVENT_WORDS = {PENDING: "waiting to be processed", PROCESSED: "processed", IGNORED: "ignored",
               FAILED: "failed"}
STAGE_WORDS = {"new": "New", "engaged": "Engaged", "loyal": "Loyal", "at_risk": "At risk",
               "churned": "Churned"}


def delivery_status(d: Delivery) -> str:
    """What became of a delivery, in words."""
    if d.status == SENT:
        return "accepted" + (f" {when(d.sent_at)}" if d.sent_at else "")
    if d.status == RETRYING:
        return f"waiting to retry (next try {when(d.next_attempt_at)})"
    if d.status == DEAD:
        tries = d.attempts or len(d.attempts_log)
        return f"gave up after {tries} {'try' if tries == 1 else 'tries'}"
    if d.status == QUEUED:
        return "waiting to be sent" if not d.attempts else "queued to be sent again"
    if d.status == CANCELLED:
        if d.last_error and d.last_error.startswith("superseded"):
            return "not sent: a newer update of this customer replaced it"
        return "not sent: " + (d.last_error or "cancelled")
    return d.status


def delivery_kind(d: Delivery) -> str:
    payload = d.payload or {}
    if d.kind == "event":
        return f"“{payload.get('name') or 'event'}” event"
    if d.kind == "consent":
        return f"{payload.get('channel', '')} consent: {payload.get('state', '')}".strip()
    return {"profile": "profile update", "erase": "erase request"}.get(d.kind, d.kind)


def _answer(attempt, tool: str) -> str:
    code = attempt.http_status
    if attempt.outcome == "sent":
        return f"{tool} accepted it" + (f" ({code})" if code else "")
    if attempt.outcome == "failed":
        return f"{tool} refused it" + (f" ({code})" if code else "")
    if attempt.outcome == INTERRUPTED:
        return f"no answer from {tool}: the push stopped mid-call (a worker crash); resent after a crash"
    if code == 429:
        return f"{tool} asked us to wait {seconds(attempt.retry_after)} (429)"
    if code is None:
        return f"{tool} could not be reached"
    if code >= 500:
        return f"{tool} had a problem on its side ({code})"
    return f"{tool} answered {code}"


_NEXT_WORDS = {"sent": "accepted", "failed": "refused", "retry": "not accepted yet",
               INTERRUPTED: "stopped again"}


def attempt_sentences(d: Delivery) -> list[dict]:
    """Each attempt of a delivery in plain language, e.g.
    `Klaviyo asked us to wait 12 s (429); retried at 14:02, accepted.`"""
    tool = tool_name(d.connector)
    attempts = list(d.attempts_log)
    lines = []
    for i, a in enumerate(attempts):
        text = _answer(a, tool)
        following = attempts[i + 1] if i + 1 < len(attempts) else None
        if a.outcome == "retry":
            if a.http_status != 429 and a.retry_after:
                text += f"; we waited {seconds(a.retry_after)}"
            if following is not None:
                text += (f"; retried at {clock(following.at, a.at)}, "
                         f"{_NEXT_WORDS.get(following.outcome, following.outcome)}")
            elif d.status == RETRYING:
                text += f"; next try at {clock(d.next_attempt_at, a.at)}"
            elif d.status == DEAD:
                text += "; that was the last try"
            elif d.status == QUEUED:
                text += "; queued again by staff"
        elif a.outcome == "failed":
            text += ". Not retried: the same request would be refused again until the data or settings change"
        lines.append({"at": a.at, "text": text + ".", "outcome": a.outcome, "http_status": a.http_status,
                      "latency_ms": a.latency_ms, "request_id": a.request_id,
                      # the hub's own note, not the tool's words ("Klaviyo said …")
                      "message": None if a.outcome == INTERRUPTED else a.message})
    return lines


# Fields that hold integer minor units: shown as money with the entry's currency.
MONEY_FIELDS = {"amount", "total", "refunded", "lifetime_spend", "price", "mrr", "lifetime_value",
                "previous_amount", "proration_amount", "amount_due", "amount_paid", "renewal_amount"}


def show_value(value, field_name: str = "", currency: str | None = None) -> str:
    """A changed value as words: times as UTC, money as money, nothing as a dash."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if field_name in MONEY_FIELDS and isinstance(value, int) and currency:
        return money(value, currency)
    if field_name == "line_items" and isinstance(value, list):
        return "; ".join(order_line(line, currency) for line in value)
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] == "T":
        try:
            return when(value)
        except ValueError:
            return value
    if isinstance(value, list):
        return "; ".join(show_value(item, "", currency) for item in value)
    if isinstance(value, dict):
        return ", ".join(f"{k.replace('_', ' ')} {show_value(v, k, currency)}" for k, v in value.items())
    return str(value)


_WHAT_WORDS = {"rules": "The hub's assessment", "profile": "Profile"}
# Shown elsewhere on the page, or noise to support staff.
_HIDDEN_FIELDS = {"plan_id", "product_ids", "stage_reason", "currency", "update_payment_url"}


def change_lines(entry: dict, currency: str | None = None) -> list[str]:
    """One outcome entry's changes, one line per thing changed:
    `Subscription Basic: created (active), amount 29.00 USD, next renewal 1 Dec 2026, 00:00 UTC`."""
    changed = entry.get("changed") or []
    currency = next((c.get("to") for c in changed if c.get("field") == "currency" and c.get("to")), currency)
    grouped: dict[str, list[str]] = {}
    for c in changed:
        what, name = c.get("what") or "", c.get("field") or ""
        parts = grouped.setdefault(what, [])
        if name in _HIDDEN_FIELDS and what != "rules" or name == "stage_reason":
            continue
        old, new = c.get("from"), c.get("to")
        if old in (None, "", []) and new in (None, False, "", []):
            continue  # "nothing → no" tells nobody anything
        if name == "created":
            parts.append("created" + (f" ({SUBSCRIPTION_WORDS.get(new, new)})" if isinstance(new, str) else ""))
            continue
        if name == "stage":
            old, new = STAGE_WORDS.get(old, old), STAGE_WORDS.get(new, new)
        label = name.replace("_", " ")
        if old is None or old == "" or old == []:
            parts.append(f"{label} {show_value(new, name, currency)}")
        else:
            parts.append(f"{label} {show_value(old, name, currency)} → {show_value(new, name, currency)}")
    lines = []
    for what, parts in grouped.items():
        if parts:
            title = _WHAT_WORDS.get(what, what[:1].upper() + what[1:])
            lines.append(f"{title}: {', '.join(parts)}")
    return lines


def entries_lines(entries: list[dict], currency: str | None) -> list[str]:
    return [line for entry in entries for line in change_lines(entry, currency)]


def attempt_heading(attempt: dict, currency: str | None = None) -> str:
    """One processing attempt of an inbound event, e.g. `Attempt 1, 3 Dec 2026, 10:00 UTC:
    failed — Throttled` or `Attempt 2, 5 Dec 2026, 09:00 UTC: replayed, no change`; an
    attempt the hub made on its own says `tried again by itself`, and a row waiting for its
    platform when it will."""
    status, error = attempt.get("status"), attempt.get("error")
    said = EVENT_WORDS.get(status, status or "")
    if status != PROCESSED and error:
        said += f" — {error}"
    if attempt["number"] > 1:
        no_change = status == PROCESSED and not entries_lines(attempt["entries"], currency)
        how = "tried again by itself, " if attempt.get("by_itself") else "replayed, "
        said = how + ("no change" if no_change else said)
    if attempt.get("retry_at") and status == FAILED:
        said += f"; tries again by itself at {when(attempt['retry_at'])}"
    return f"Attempt {attempt['number']}, {when(attempt.get('at'))}: {said}"


def replay_message(event_id: int, before: str | None, latest: list[dict], status: str,
                   error: str | None, currency: str | None = None) -> str:
    """What a replay did, for the operator who asked for it."""
    if status == FAILED:
        return f"Event #{event_id} failed again: {error}"
    if status == IGNORED:
        return f"Event #{event_id} was processed again and ignored: {error}"
    lines = entries_lines(latest, currency)
    if before == FAILED:
        return f"Event #{event_id} was processed again: it worked this time. " + (
            f"What changed: {'; '.join(lines)}." if lines else "Replayed, no change.")
    return f"Event #{event_id} was " + (f"replayed: {'; '.join(lines)}." if lines else "replayed, no change.")


def diff_lines(person) -> list[str]:
    """A replay's diff for one subscriber (hub.ops.replay.PersonDiff), a line per kind of change."""
    lines = change_lines({"changed": person.changed}, person.currency)
    if person.stage:
        old, new = (STAGE_WORDS.get(s, s) or "—" for s in person.stage)
        lines.append(f"Stage: {old} → {new}")
    if person.triggers:
        lines.append("Triggers: " + ", ".join(person.triggers))
    if person.deliveries:
        lines.append("Deliveries: " + ", ".join(person.deliveries))
    return lines


def diff_heading(person) -> str:
    events = ", ".join(f"#{i}" for i in person.events)
    if person.subscriber_id is None:
        return f"No subscriber (events {events})" if events else "No subscriber"
    who = f"Subscriber #{person.subscriber_id}" + (f" ({mask_email(person.email)})" if person.email else "")
    return who + (f", events {events}" if events else "")


_WORDS = {"when": when, "clock": clock, "money": money, "every": every, "tool": tool_name,
          "source": source_name, "delivery_status": delivery_status, "delivery_kind": delivery_kind,
          "attempts": attempt_sentences, "changes": change_lines, "mask_email": mask_email,
          "mask_phone": mask_phone, "mask_text": mask_text, "subscription": SUBSCRIPTION_WORDS,
          "payment": PAYMENT_WORDS, "event": EVENT_WORDS, "stage": STAGE_WORDS, "seconds": seconds,
          "tries": readmodel.attempts_of, "attempt_heading": attempt_heading, "diff": diff_lines,
          "diff_heading": diff_heading}


# `w.when(...)`, `w.money(...)`, …: the helpers templates use to say things plainly.
bp.record_once(lambda state: state.app.jinja_env.globals.update(w=_WORDS))


def _int_arg(name: str) -> int | None:
    """A whole-number filter (a page's `before` id, `days`); anything else is no filter."""
    return row_id(request.args.get(name, ""))


def _back(default: str) -> str:
    target = request.form.get("next") or ""
    return target if target.startswith("/sync-log") and not target.startswith("//") else default


# Pages ---------------------------------------------------------------------------------

@bp.get("/")
def index():
    hub = current_hub()
    with hub.storage.session() as session:
        open_counts = synclog.open_event_counts(session)
        counts = synclog.delivery_counts(session)
        latest = synclog.recent_events(session, limit=10)
        people = synclog.subscribers_by_id(session, [e.subscriber_id for e in latest.rows])
        totals = {status: sum(n for (_, st), n in counts.items() if st == status)
                  for status in (QUEUED, RETRYING, DEAD)}
        return render_template("index.html", open_counts=open_counts, totals=totals, latest=latest.rows,
                               owed=synclog.owed_profile_counts(session),
                               people=people, connectors=support.enabled_connectors(hub.settings),
                               drift=consent.last_report(session))


@bp.get("/consent-drift")
def consent_drift():
    """The people the last consent check found a tool holding another consent than the source's."""
    tool = request.args.get("tool") or None
    kind = request.args.get("kind") or None
    with current_hub().storage.session() as session:
        rows = consent.drifted_people(session, connector=tool, kind=kind)
        people = synclog.subscribers_by_id(session, [r.subscriber_id for r in rows])
        return render_template("consent_drift.html", rows=rows, people=people, report=consent.last_report(session),
                               tool=tool, kind=kind, shown=consent.SHOWN)


@bp.get("/search")
def search():
    q = request.args.get("q", "").strip()
    with current_hub().storage.session() as session:
        found = synclog.search(session, q)
        if found.only is not None:
            return redirect(url_for("synclog.subscriber", subscriber_id=found.only.id))
        if not found.subscribers and len(found.events) == 1:  # an event id: show it in its customer's story
            e = found.events[0]
            if e.subscriber_id:
                # The timeline's page that begins with this event, wherever it falls in their history.
                return redirect(url_for("synclog.subscriber", subscriber_id=e.subscriber_id,
                                        before=synclog.event_cursor(e), _anchor=f"event-{e.id}"))
            return redirect(url_for("synclog.event", event_id=e.id))
        people = synclog.subscribers_by_id(session, [e.subscriber_id for e in found.events])
        return render_template("search.html", q=q, found=found, people=people)


@bp.get("/subscribers/<id:subscriber_id>")
def subscriber(subscriber_id: int):
    hub = current_hub()
    with hub.storage.session() as session:
        person = session.get(Subscriber, subscriber_id)
        if person is None:
            abort(404, description=f"No subscriber #{subscriber_id}.")
        page = synclog.story(session, subscriber_id, before=request.args.get("before"), limit=PAGE_SIZE)
        enabled = support.enabled_connectors(hub.settings)
        return render_template("subscriber.html", s=person, page=page, items=page.rows,
                               tools=support.profile_tools(hub.settings, enabled),
                               owed=synclog.owed_profiles_of(session, subscriber_id), enabled=enabled,
                               currency=person.currency or next(
                                   (x.currency for x in person.subscriptions if x.currency), None),
                               stage_reason=readmodel.stage_reason(person, rules.current_params(hub.settings)))


@bp.post("/subscribers/<id:subscriber_id>/resend")
@operator_required
def resend(subscriber_id: int):
    hub = current_hub()
    connector = request.form.get("connector", "")
    with hub.storage.session() as session:
        person = session.get(Subscriber, subscriber_id)
        if person is None:
            abort(404, description=f"No subscriber #{subscriber_id}.")
        delivery = support.resend_profile(session, hub.settings, person, connector)
    if delivery is None:
        flash(f"Nothing was sent: {tool_name(connector)} is not connected, does not take profiles, "
              "or this customer has no email or phone it can use.", "error")
    else:
        support.request_push(hub, [connector])
        flash(f"This customer's profile will be sent to {tool_name(connector)} again within a minute "
              f"(delivery #{delivery.id}).", "info")
    return redirect(url_for("synclog.subscriber", subscriber_id=subscriber_id))


def _time_arg(name: str) -> datetime | None:
    value = request.args.get(name, "").strip()
    if not value:
        return None
    try:
        at = utc(value)
    except ValueError:
        at = None
    # Nothing the hub holds predates 1970; the dashboard steps a year and a month either side.
    if at is None or not EARLIEST_FILTER_YEAR <= at.year <= LATEST_FILTER_YEAR:
        flash(f"“{value[:40]}” is not a date and time between {EARLIEST_FILTER_YEAR} and {LATEST_FILTER_YEAR}; "
              "use e.g. 2026-11-01 or 2026-11-01T14:00.", "error")
        return None
    return at


@bp.get("/events")
def events():
    source = request.args.get("source") or None
    topic = (request.args.get("topic") or "").strip() or None
    status = request.args.get("status") or None
    since, until = _time_arg("since"), _time_arg("until")
    if source not in SOURCE_NAMES:
        source = None
    if status not in EVENT_WORDS:
        status = None
    with current_hub().storage.session() as session:
        page = synclog.recent_events(session, source=source, topic=topic, status=status, since=since,
                                     until=until, before=_int_arg("before"), limit=PAGE_SIZE)
        people = synclog.subscribers_by_id(session, [e.subscriber_id for e in page.rows])
        filters = {k: v for k, v in request.args.items() if k != "before" and v}
        return render_template("events.html", page=page, people=people, filters=filters,
                               sources=SOURCE_NAMES, statuses=EVENT_WORDS, topics=_known_topics())


def _known_topics() -> list[str]:
    return sorted({topic for name in SOURCE_NAMES for topic in get_source(name).topics})


@bp.get("/events/<id:event_id>")
def event(event_id: int):
    with current_hub().storage.session() as session:
        row = session.get(InboxEvent, event_id)
        if row is None:
            abort(404, description=f"No inbound event #{event_id}.")
        person = session.get(Subscriber, row.subscriber_id) if row.subscriber_id else None
        return render_template("event.html", e=row, owner=person, headers=scrub_headers(row.headers),
                               body=scrub_body(row.body))


@bp.get("/events/<id:event_id>/body")
def event_body(event_id: int):
    """The raw body with secrets and card data removed, as text (loaded when staff open it)."""
    with current_hub().storage.session() as session:
        body = session.scalar(select(InboxEvent.body).where(InboxEvent.id == event_id))
    if body is None:
        abort(404, description=f"No inbound event #{event_id}.")
    return Response(scrub_body(body), mimetype="text/plain", headers={"Cache-Control": "no-store"})


@bp.post("/events/<id:event_id>/replay")
@operator_required
def replay(event_id: int):
    hub = current_hub()
    with hub.storage.session() as session:
        row = session.get(InboxEvent, event_id)
        if row is None:
            abort(404, description=f"No inbound event #{event_id}.")
        before = row.status
        latest = support.replay_event(session, row, hub.settings)
        status, subscriber_id = row.status, row.subscriber_id
        owner = session.get(Subscriber, subscriber_id) if subscriber_id else None
        message = replay_message(event_id, before, latest, status, row.error, owner.currency if owner else None)
    support.request_push(hub)
    flash(message, "error" if status == FAILED else "info")
    default = (url_for("synclog.subscriber", subscriber_id=subscriber_id) if subscriber_id
               else url_for("synclog.failed_events"))
    return redirect(_back(default))


# Events one replay from the sync log may take; a larger range belongs to `hub replay`.
WEB_REPLAY_LIMIT = 500


def _replay_selection() -> tuple[dict, object]:
    """The events a replay form names: one event (`event_id`) or a range (`since`, `until`,
    `source`, `topic`); the form's fields (to post them again) and the query."""
    form = request.form
    fields = {k: form.get(k, "").strip() for k in ("event_id", "since", "until", "source", "topic")}
    fields = {k: v for k, v in fields.items() if v}
    if "event_id" in fields:
        one = row_id(fields["event_id"])
        if one is None:
            abort(404, description="No such inbound event.")
        return {"event_id": one}, select_events(ids=[str(one)])
    try:
        since, until = utc(fields.get("since")), utc(fields.get("until"))
    except ValueError:
        abort(400, description="Name the range with dates and times such as 2026-11-01T14:00.")
    if since is None and until is None:
        abort(400, description="Name a range: received from, until, or both.")
    source = fields.get("source") if fields.get("source") in SOURCE_NAMES else None
    query = select_events(since=since, until=until, source=source, topic=fields.get("topic"))
    return {k: v for k, v in fields.items() if k != "source" or source}, query.limit(WEB_REPLAY_LIMIT)


@bp.post("/replay")
@operator_required
def replay_range():
    """Replay one event or a range with the diff per subscriber; `dry_run` keeps nothing."""
    hub = current_hub()
    fields, query = _replay_selection()
    dry_run = request.form.get("dry_run") == "1"
    result = run_replay(hub.storage, hub.settings, query, dry_run=dry_run)
    if not dry_run and result.rows:
        support.request_push(hub)
    return render_template("replay.html", result=result, fields=fields, limit=WEB_REPLAY_LIMIT,
                           people=result.changed_people())


@bp.get("/failed-events")
def failed_events():
    with current_hub().storage.session() as session:
        page = synclog.failed_events(session, before=_int_arg("before"), limit=PAGE_SIZE)
        people = synclog.subscribers_by_id(session, [e.subscriber_id for e in page.rows])
        return render_template("failed_events.html", page=page, people=people)


@bp.get("/deliveries")
def deliveries():
    status = request.args.get("status") if request.args.get("status") in synclog.FAILING else None
    connector = request.args.get("connector") or None
    with current_hub().storage.session() as session:
        known = synclog._connector_names()
        connector = connector if connector in known else None
        page = synclog.failing_deliveries(session, status=status, connector=connector,
                                          before=_int_arg("before"), limit=PAGE_SIZE)
        people = synclog.subscribers_by_id(session, [d.subscriber_id for d in page.rows])
        counts = synclog.delivery_counts(session)
        for d in page.rows:
            list(d.attempts_log)  # loaded while the session is open
        filters = {k: v for k, v in request.args.items() if k != "before" and v}
        dead_total = sum(n for (c, st), n in counts.items() if st == DEAD and (connector is None or c == connector))
        return render_template("deliveries.html", page=page, people=people, counts=counts, dead_total=dead_total,
                               connectors=known, status=status, connector=connector, filters=filters)


@bp.post("/deliveries/retry")
@operator_required
def retry():
    hub = current_hub()
    ids = [i for i in map(row_id, request.form.getlist("delivery_id")) if i is not None]
    connector = request.form.get("connector") or None
    everything = request.form.get("all") == "dead"
    with hub.storage.session() as session:
        if ids:
            tools = set(session.scalars(select(Delivery.connector).where(Delivery.id.in_(ids))))
        else:
            tools = {connector} if connector else None
        count = support.retry_deliveries(session, ids=ids, all_dead=everything, connector=connector)
    if count:
        support.request_push(hub, tools)
        flash(f"{count} {'delivery is' if count == 1 else 'deliveries are'} queued again and will be "
              "sent within a minute.", "info")
    else:
        flash("Nothing to retry: those deliveries were already queued or sent.", "info")
    return redirect(_back(url_for("synclog.deliveries")))


@bp.get("/dashboard")
def dashboard_page():
    hub = current_hub()
    days = _int_arg("days") or 90
    days = days if days in (30, 90, 180, 365) else 90
    as_of = _time_arg("at")
    data = dashboard.cached(hub, as_of=as_of, days=days)
    return render_template("dashboard.html", data=data, days=days)


__all__ = ["attempt_heading", "attempt_sentences", "bp", "change_lines", "replay_message", "delivery_status", "money",
           "seconds", "when"]
