"""POST /webhooks/<source>: verify, store the raw body, answer. Nothing else.

Webhook bodies are UNTRUSTED until verified, and even then only stored here:
parsing and applying them is a worker's job, so a slow or broken normalizer can
never make a platform's delivery time out or be lost.

This path is served as plain WSGI in front of Flask (WebhookApp): it is the one
path that must keep up with a platform's bursts, and Flask's request context and
routing would cost more than the durable insert itself.
"""
from __future__ import annotations

import json
import logging

from hub.errors import BodyRefused, SignatureInvalid, SourceNotConfigured, UnknownSource
from hub.sync.inbox import stored_headers
from webhooks import get_source

log = logging.getLogger(__name__)
PREFIX = "/webhooks/"

_RECEIVED = b'{"duplicate":false,"received":true}\n'
_DUPLICATE = b'{"duplicate":true,"received":true}\n'
_REASONS = {200: "200 OK", 401: "401 Unauthorized", 404: "404 Not Found", 405: "405 Method Not Allowed",
            411: "411 Length Required", 413: "413 Payload Too Large", 503: "503 Service Unavailable"}


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def request_headers(environ: dict) -> dict:
    """The request's headers as one plain dict with lower-case names, read straight from WSGI."""
    headers = {key[5:].replace("_", "-").lower(): value
               for key, value in environ.items() if key.startswith("HTTP_")}
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = environ[key]
    return headers


def request_body(environ: dict, limit: int) -> bytes:
    """The body of a request that refusal() let through, at most `limit` bytes, else BodyRefused.

    refusal() has checked the headers: a Transfer-Encoding is chunked, a Content-Length is
    digits within the limit. A chunked body comes without Content-Length (RFC 9112 §6.3);
    granian and gunicorn de-chunk it and set `wsgi.input_terminated`, so wsgi.input ends
    where the body does, and reading limit + 1 bytes tells an oversized one without holding
    more. A server that does not de-chunk leaves the length unknown: 411.
    """
    if environ.get("HTTP_TRANSFER_ENCODING", "").strip():
        if not environ.get("wsgi.input_terminated"):
            raise BodyRefused(411, "send the body with a Content-Length header")
        body = environ["wsgi.input"].read(limit + 1)
        if len(body) > limit:
            raise BodyRefused(413, "body larger than the hub accepts")
        return body
    length = int((environ.get("CONTENT_LENGTH") or "0").strip())
    return environ["wsgi.input"].read(length) if length else b""


def ingest(hub, source: str, environ: dict) -> tuple[int, bytes]:
    """Verify and store one webhook of a WSGI request; the HTTP status and body to answer with."""
    refused = refusal(hub, source, environ.get("REQUEST_METHOD"), environ.get("CONTENT_LENGTH"),
                      environ.get("HTTP_TRANSFER_ENCODING"))
    if refused:
        return refused
    try:
        body = request_body(environ, hub.settings.HUB_MAX_BODY_BYTES)
    except BodyRefused as exc:
        return exc.status, _error(str(exc))
    return receive(hub, source, request_headers(environ), body, environ.get("REMOTE_ADDR"))


def refusal(hub, source: str, method: str | None, content_length: str | None,
            transfer_encoding: str | None = None) -> tuple[int, bytes] | None:
    """The answer to a webhook refused before its body is read, else None."""
    try:
        get_source(source)
    except UnknownSource:
        return 404, _error(f"unknown source {source!r}")
    if method != "POST":
        return 405, _error("webhooks are POSTed")
    coding = (transfer_encoding or "").strip().lower()
    if coding:
        # Only chunked is read (bounded by the size limit as it arrives); any other coding
        # leaves the length unknown.
        return None if coding == "chunked" else (411, _error("send the body with a Content-Length header"))
    declared = (content_length or "0").strip()
    if not (declared.isascii() and declared.isdigit()):
        return 411, _error("a valid Content-Length is required")
    if int(declared) > hub.settings.HUB_MAX_BODY_BYTES:
        return 413, _error("body larger than the hub accepts")
    return None


def receive(hub, source: str, headers: dict, body: bytes, remote_addr: str | None) -> tuple[int, bytes]:
    """Verify and store a webhook whose body has been read (headers: lower-case names)."""
    envelope, refused = verified(hub, source, headers, body, remote_addr)
    if refused:
        return refused
    try:
        created = hub.storage.inbox_writer.write(source, envelope, stored_headers(headers), body)
    except Exception as exc:  # the driver's own errors too: any failure to store is a 503
        return _not_stored(source, envelope, exc)
    return _stored(hub, created)


async def receive_grouped(hub, source: str, headers: dict, body: bytes,
                          remote_addr: str | None) -> tuple[int, bytes]:
    """receive() on the web server's event loop (hub/rsgi.py): webhooks arriving together
    share one commit (InboxWriter.write_grouped)."""
    envelope, refused = verified(hub, source, headers, body, remote_addr)
    if refused:
        return refused
    try:
        created = await hub.storage.inbox_writer.write_grouped(source, envelope, stored_headers(headers), body)
    except Exception as exc:  # the driver's own errors too: any failure to store is a 503
        return _not_stored(source, envelope, exc)
    return _stored(hub, created)


def verified(hub, source: str, headers: dict, body: bytes, remote_addr: str | None):
    """(the webhook's Envelope, None) once its signature holds, else (None, the answer refusing it)."""
    module = get_source(source)
    try:
        module.verify(hub.settings, headers, body)
    except SourceNotConfigured as exc:
        # The hub's setup is missing, not the sender's signature: 503 tells the platform to
        # retry (Shopify, Stripe and Chargebee all do) until someone sets the secret.
        log.error("refused a %s webhook: %s", source, exc)
        return None, (503, _error(str(exc)))
    except SignatureInvalid as exc:
        # Logged without the body: an unverified body is not ours to keep. Counted for the
        # dashboard: a platform signing with another secret than the hub's is told 401 on
        # every webhook, and retries each only for a while.
        log.warning("rejected %s webhook from %s: %s", source, remote_addr, exc)
        hub.queues.note_refused(source, str(exc))
        return None, (401, _error("signature invalid"))
    return module.describe(headers, body), None


def _not_stored(source: str, envelope, exc: Exception) -> tuple[int, bytes]:
    log.error("could not store %s webhook %s: %s", source, envelope.event_id, exc)
    return 503, _error("could not store the webhook; please retry")


def _stored(hub, created: bool) -> tuple[int, bytes]:
    if created:
        hub.queues.request_drain_soon()
    return 200, _RECEIVED if created else _DUPLICATE


class WebhookApp:
    """WSGI middleware: /webhooks/<source> here, every other path to the Flask app."""

    def __init__(self, hub, app):
        self.hub = hub
        self.app = app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if not path.startswith(PREFIX):
            return self.app(environ, start_response)
        status, body = ingest(self.hub, path[len(PREFIX):].strip("/"), environ)
        start_response(_REASONS[status], [("Content-Type", "application/json"),
                                          ("Content-Length", str(len(body)))])
        return [body]
