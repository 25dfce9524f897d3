"""JSON API: GET /api/subscribers/<email or id>, POST /api/usage (bearer token)."""
from __future__ import annotations

import hmac
import logging
import math
import reprlib
from datetime import datetime, timedelta, timezone
from functools import wraps

from flask import Blueprint, jsonify, request

from hub import jobs
from hub.db.unit import UnitOfWork
from hub.ops import synclog
from hub.sync import outbox, readmodel, rules
from hub.values import iso, utc
from hub.web import current_hub

bp = Blueprint("api", __name__, url_prefix="/api")
log = logging.getLogger(__name__)


def token_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        expected = current_hub().settings.HUB_API_TOKEN
        given = request.headers.get("Authorization", "")
        if not expected or not hmac.compare_digest(given.encode(), f"Bearer {expected}".encode()):
            return jsonify(error="a valid 'Authorization: Bearer HUB_API_TOKEN' header is required"), 401
        return view(*args, **kwargs)
    return wrapper


@bp.get("/subscribers/<path:key>")
@token_required
def subscriber(key: str):
    hub = current_hub()
    with hub.storage.session() as session:
        found = synclog.find(session, key)
        if found is None:
            return jsonify(error=f"no subscriber matches {key!r}"), 404
        return jsonify(subscriber=readmodel.state(found, rules.current_params(hub.settings)),
                       timeline=readmodel.timeline(session, found.id))


@bp.post("/usage")
@token_required
def usage():
    """Record a usage report, then run the upsell rules on it:
    {"subscriber": email or id, "quantity": n, "metric"?: str, "at"?: ISO-8601}."""
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # the parser gives up on deep nesting with this, not a ValueError
        return jsonify(error=f"the body is nested too deeply; {USAGE_FORMAT}"), 400
    try:
        report = usage_report(data)
    except ValueError as exc:
        return jsonify(error=str(exc)), 400
    hub = current_hub()
    with hub.storage.session() as session:
        found = synclog.find(session, report["subscriber"])
        if found is None:
            return jsonify(error=f"no subscriber matches {report['subscriber']!r}"), 404
        if found.erased_at is not None:
            return jsonify(error="this subscriber's data was erased"), 410
        entry = {"at": iso(report["at"]), "quantity": report["quantity"], "metric": report["metric"]}
        found.usage = kept_usage(found.usage or [], report["at"]) + [entry]
        # As of the report's own instant: a late report is judged on the 14 days before it.
        triggers = rules.on_usage(session, found, report["at"], settings=hub.settings)
        unit = UnitOfWork(session)
        outbox.plan(unit, hub.settings, found, None, triggers, None)
        outbox.flush_pending_profiles(unit, hub.settings)
        answer = {"recorded": entry, "subscriber_id": found.id, "triggers": [t.name for t in triggers]}
    try:
        jobs.request_pushes(hub)
    except Exception as exc:  # noqa: BLE001 - Redis down: the worker's one-minute backstop pushes
        log.warning("usage report stored; pushes not enqueued now (%s), the worker's backstop will", exc)
    return jsonify(answer), 201


USAGE_FORMAT = 'expected JSON {"subscriber": email or id, "quantity": number, "metric"?: text, "at"?: ISO-8601}'
# Reports kept per subscriber: the rules look back `usage_window_days`; older ones go.
USAGE_KEEP_DAYS, USAGE_KEEP_MAX = 400, 2000


def usage_report(data) -> dict:
    """The validated fields of a usage report; ValueError says which field is wrong."""
    if not isinstance(data, dict):
        raise ValueError(USAGE_FORMAT)
    unknown = sorted(set(data) - {"subscriber", "quantity", "metric", "at"})
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r}; {USAGE_FORMAT}")
    who = data.get("subscriber")
    if isinstance(who, bool) or not isinstance(who, (str, int)) or not str(who).strip():
        raise ValueError(f"subscriber: an email or a subscriber id is required; {USAGE_FORMAT}")
    quantity = data.get("quantity")
    if isinstance(quantity, bool) or not isinstance(quantity, (int, float)) or not _finite(quantity):
        raise ValueError(f"quantity: a number is required, got {reprlib.repr(quantity)}")
    if quantity < 0:
        raise ValueError(f"quantity: must be 0 or more, got {quantity!r}")
    metric = data.get("metric", "usage")
    if not isinstance(metric, str) or not metric.strip() or len(metric) > 100:
        raise ValueError("metric: a name of 1-100 characters is required when given")
    try:
        at = utc(data.get("at")) or datetime.now(timezone.utc)
    except (TypeError, ValueError):
        raise ValueError("at: an ISO-8601 instant is required when given, "
                         f"got {reprlib.repr(data.get('at'))}") from None
    return {"subscriber": str(who).strip(), "quantity": quantity, "metric": metric.strip(), "at": at}


def _finite(number: int | float) -> bool:
    """Not infinite, not NaN, and within a float's range: no real usage figure is larger."""
    try:
        return math.isfinite(number)
    except OverflowError:  # an integer of 309 digits or more
        return False


def kept_usage(usage: list, at: datetime) -> list:
    """Earlier reports still worth keeping beside one made at `at` (bounded, newest last)."""
    since = at - timedelta(days=USAGE_KEEP_DAYS)
    return [u for u in usage if u.get("at") and utc(u["at"]) >= since][-(USAGE_KEEP_MAX - 1):]
