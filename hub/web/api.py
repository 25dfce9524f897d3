"""JSON API: GET /api/subscribers/<email or id>, POST /api/usage (bearer token)."""
from __future__ import annotations

import hmac
from datetime import datetime, timezone
from functools import wraps

from flask import Blueprint, jsonify, request

from hub import synclog
from hub.values import iso, utc
from hub.web import current_hub

bp = Blueprint("api", __name__, url_prefix="/api")


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
    with current_hub().storage.session() as session:
        found = synclog.find(session, key)
        if found is None:
            return jsonify(error=f"no subscriber matches {key!r}"), 404
        return jsonify(subscriber=synclog.state(found), timeline=synclog.timeline(session, found.id))


@bp.post("/usage")
@token_required
def usage():
    """Record a usage report: {"subscriber": email or id, "quantity": n, "at": ISO-8601, "metric": str}."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict) or "subscriber" not in data or "quantity" not in data:
        return jsonify(error='expected JSON {"subscriber": email or id, "quantity": number, "at"?: ISO-8601}'), 400
    try:
        quantity = float(data["quantity"])
        at = utc(data.get("at")) or datetime.now(timezone.utc)
    except (TypeError, ValueError) as exc:
        return jsonify(error=f"bad usage report: {exc}"), 400
    with current_hub().storage.session() as session:
        found = synclog.find(session, str(data["subscriber"]))
        if found is None:
            return jsonify(error=f"no subscriber matches {data['subscriber']!r}"), 404
        entry = {"at": iso(at), "quantity": quantity, "metric": str(data.get("metric") or "usage")}
        # Keep a bounded window: upsell rules look back 14 days at most.
        found.usage = (found.usage or [])[-499:] + [entry]
        return jsonify(recorded=entry, subscriber_id=found.id), 201
