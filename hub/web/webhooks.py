"""POST /webhooks/<source>: verify, store the raw body, answer. Nothing else.

Webhook bodies are UNTRUSTED until verified, and even then only stored here:
parsing and applying them is a worker's job, so a slow or broken normalizer can
never make a platform's delivery time out or be lost.
"""
from __future__ import annotations

import logging

from flask import Blueprint, jsonify, request
from sqlalchemy.exc import SQLAlchemyError

from hub.errors import SignatureInvalid, UnknownSource
from hub.inbox import receive, stored_headers
from hub.web import current_hub
from webhooks import get_source

bp = Blueprint("webhooks", __name__)
log = logging.getLogger(__name__)


@bp.errorhandler(413)
def too_large(_error):
    return jsonify(error="body larger than the hub accepts"), 413


@bp.post("/webhooks/<source>")
def receive_webhook(source: str):
    hub = current_hub()
    try:
        module = get_source(source)
    except UnknownSource:
        return jsonify(error=f"unknown source {source!r}"), 404
    body = request.get_data(cache=False)
    headers = request.headers
    try:
        module.verify(hub.settings, headers, body)
    except SignatureInvalid as exc:
        # Logged without the body: an unverified body is not ours to keep.
        log.warning("rejected %s webhook from %s: %s", source, request.remote_addr, exc)
        return jsonify(error="signature invalid"), 401
    envelope = module.describe(headers, body)
    try:
        with hub.storage.engine.begin() as conn:
            created = receive(conn, source, envelope, stored_headers(headers), body)
    except SQLAlchemyError as exc:
        log.error("could not store %s webhook %s: %s", source, envelope.event_id, exc)
        return jsonify(error="could not store the webhook; please retry"), 503
    if created:
        hub.queues.request_drain()
    return jsonify(received=True, duplicate=not created), 200
