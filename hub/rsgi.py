"""The entry point `hub serve` gives granian: `hub.rsgi:app`, the WSGI app behind an RSGI front.

Why not granian's WSGI interface: it calls the app on a Python thread as soon as the headers
are in, and `wsgi.input.read()` then waits for the body with no time limit. A client that
sends headers and half a body and waits (slowloris) holds that thread, and `hub serve` runs
one per process: every other webhook and `/healthz` would queue behind it. Here the body is
awaited on granian's event loop, where a slow client costs a pending read and no thread, and
the wait is bounded by HUB_REQUEST_READ_TIMEOUT (408). Only a complete request reaches the
WSGI app (webhooks, then Flask), which runs on the loop's thread as it ran on the one WSGI
thread. Answers are handed to granian whole, and its Rust side writes them: a client that
reads slowly holds no Python either.

A webhook is verified on the loop and its row awaited there (hub.db.inbox.InboxWriter.
write_grouped): webhooks read in the same turn of the loop, and on PostgreSQL those read while
the previous group commits, are committed together, in one transaction and one fsync.
"""
from __future__ import annotations

import asyncio
import io
import multiprocessing
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from hub.supervise import die_with_parent
from hub.web.webhooks import PREFIX, receive_grouped, refusal
from hub.wsgi import app as wsgi_app

if multiprocessing.parent_process() is not None:
    # A granian worker: it holds the listening socket, so it must not outlive granian's main
    # process (killed outright, that one cannot stop it).
    die_with_parent(multiprocessing.parent_process().pid)

_HUB = wsgi_app.extensions["hub"]
_TIMEOUT = _HUB.settings.HUB_REQUEST_READ_TIMEOUT
_MAX_BODY = _HUB.settings.HUB_MAX_BODY_BYTES
_TOO_LARGE = b'{"error":"body larger than the hub accepts"}'
# `hub serve --threads N`: N > 1 runs the WSGI app (pages, API) on that many threads beside the loop.
_THREADS = int(os.environ.get("HUB_WEB_THREADS") or 1)
_POOL = ThreadPoolExecutor(_THREADS, thread_name_prefix="hub-web") if _THREADS > 1 else None
_JSON = [("content-type", "application/json")]
_WSGI = {"SCRIPT_NAME": "", "wsgi.version": (1, 0), "wsgi.errors": sys.stderr, "wsgi.multithread": _THREADS > 1,
         "wsgi.multiprocess": True, "wsgi.run_once": False, "wsgi.input_terminated": True}


async def app(scope, protocol):
    if scope.proto != "http":
        return
    headers = scope.headers
    length = headers.get("content-length")
    path = scope.path
    if path.startswith(PREFIX):
        # Webhooks, the path that must keep up with a platform's bursts: straight from the
        # RSGI scope to the inbox, without building a WSGI environ.
        source = path[len(PREFIX):].strip("/")
        refused = refusal(_HUB, source, scope.method, length, headers.get("transfer-encoding"))
        if refused:
            protocol.response_bytes(refused[0], _JSON, refused[1])
            return
    elif length is not None and (not length.isdigit() or int(length) > _MAX_BODY):
        protocol.response_bytes(413, _JSON, _TOO_LARGE)
        return
    try:
        body = await _body(protocol, length is not None)
    except TimeoutError:
        protocol.response_bytes(408, _JSON, b'{"error":"request not received in time"}')
        return
    except _BodyTooLarge:
        protocol.response_bytes(413, _JSON, _TOO_LARGE)
        return
    if path.startswith(PREFIX):
        status, answer = await receive_grouped(_HUB, source, dict(headers.items()), body,
                                               scope.client.rpartition(":")[0])
        protocol.response_bytes(status, _JSON, answer)
        return
    if _POOL is None:
        status, answer_headers, answer = wsgi_response(wsgi_environ(scope, body))
    else:
        status, answer_headers, answer = await asyncio.get_running_loop().run_in_executor(
            _POOL, wsgi_response, wsgi_environ(scope, body))
    protocol.response_bytes(status, answer_headers, answer)


class _BodyTooLarge(Exception):
    pass


async def _body(protocol, has_length: bool) -> bytes:
    """The whole body; TimeoutError past the read timeout, _BodyTooLarge past the size limit."""
    # A timer handle rather than asyncio.timeout(): the same cancellation, less work per request.
    # The timer says itself that it fired: comparing loop.time() with its due time misread a
    # timeout as a shutdown (and answered 500) when uvloop ran the timer a moment before it.
    expired = []

    def expire(task=asyncio.current_task()) -> None:
        expired.append(True)
        task.cancel()

    timer = asyncio.get_running_loop().call_later(_TIMEOUT, expire)
    try:
        # With Content-Length, granian stops at that many bytes (checked above).
        return await (protocol() if has_length else _chunked_body(protocol))
    except asyncio.CancelledError:
        if not expired:
            raise  # cancelled for another reason (the server stopping)
        raise TimeoutError from None
    finally:
        timer.cancel()


async def _chunked_body(protocol) -> bytes:
    """A body sent without Content-Length, refused past the size limit instead of held whole."""
    chunks, size = [], 0
    async for chunk in protocol:
        size += len(chunk)
        if size > _MAX_BODY:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def wsgi_environ(scope, body: bytes) -> dict:
    """PEP 3333's environ for an RSGI request whose body has been read."""
    server, _, port = scope.server.rpartition(":")
    environ = {
        **_WSGI,
        "REQUEST_METHOD": scope.method,
        # RSGI decodes the path as UTF-8; WSGI carries it as latin-1 (PEP 3333, "unicode issues").
        "PATH_INFO": scope.path.encode().decode("latin-1"),
        "QUERY_STRING": scope.query_string,
        "SERVER_NAME": server,
        "SERVER_PORT": port,
        "SERVER_PROTOCOL": f"HTTP/{scope.http_version}",
        "REMOTE_ADDR": scope.client.rpartition(":")[0],
        "wsgi.url_scheme": scope.scheme,
        "wsgi.input": io.BytesIO(body),
    }
    for name, value in scope.headers.items():
        if name == "content-type":
            environ["CONTENT_TYPE"] = value
        elif name == "content-length":
            environ["CONTENT_LENGTH"] = value
        else:
            key = "HTTP_" + name.upper().replace("-", "_")
            if key in environ:  # repeated header: one line, as RFC 9110 §5.3 allows (cookies use "; ")
                value = environ[key] + ("; " if key == "HTTP_COOKIE" else ",") + value
            environ[key] = value
    if "HTTP_HOST" not in environ and scope.authority:
        environ["HTTP_HOST"] = scope.authority
    return environ


def wsgi_response(environ: dict) -> tuple[int, list, bytes]:
    """Call the WSGI app; its status, headers and whole body."""
    started = []

    def start_response(status, headers, exc_info=None):
        started[:] = [int(status[:3]), headers]

    result = wsgi_app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return started[0], started[1], body
