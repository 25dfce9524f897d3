"""Staff login and logout, CSRF tokens, roles, and the login rate limit.

Which library does what: Flask-Login keeps who is logged in, Flask-WTF's CSRFProtect the form
tokens, Flask-Limiter (on `limits`) the login rate limit; this module sets them up for the hub.

Threats this module answers:
- Password guessing: failed logins are counted per (email, IP) and per IP in Redis, so
  the limit holds across every web process; after MAX_FAILURES in a minute further
  attempts are refused with 429 until the minute is over, right password or not.
  Flask-Limiter counts requests, so its limits only test before the view and deduct after it
  when the answer was a refused password (deduct_when: 401). When Redis is unreachable the
  counts fall back to this process's memory (weaker with several processes, but never no
  limit at all) and Redis is tried again after a back-off.
- Cross-site requests: every POST, PUT, PATCH and DELETE to a page needs the form's token
  (CSRFProtect, checked before any view; the session cookie is also SameSite=Lax, set in
  create_app). Webhooks (plain WSGI in front of Flask) and the JSON API (bearer token, no
  cookie) carry no cookie to ride on, so they need none: the API is exempted by name.
- Session fixation: the session is cleared at login, which also drops the CSRF token.
- Stolen or left-behind cookies: the cookie is signed, not stored, so the id Flask-Login keeps
  in it carries the user's session generation (StaffUser.get_id, Flask-Login's "alternative
  id"); logout and a password change move it on (StaffUser.end_sessions), and every cookie
  of that user issued before loads no one, on every device.
- Account discovery: an unknown email costs the same password-hash check as a known one
  and gets the same answer.
"""
from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time
from functools import wraps
from typing import ClassVar
from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_limiter import Limiter
from flask_login import LoginManager, current_user, login_user, logout_user
from flask_wtf.csrf import CSRFError, CSRFProtect
from limits.storage import RedisStorage
from redis import exceptions as redis_errors
from sqlalchemy import select
from werkzeug.exceptions import BadRequest
from werkzeug.security import check_password_hash, generate_password_hash

from hub.models import StaffUser
from hub.values import normalize_email, row_id
from hub.web import current_hub

log = logging.getLogger(__name__)
bp = Blueprint("auth", __name__)

# Failed logins allowed per (email, IP) in a window; the next attempt in it is refused (429).
MAX_FAILURES = 9
# Failed logins allowed per IP whatever the email, against one address trying many accounts.
MAX_FAILURES_PER_IP = 30
WINDOW_SECONDS = 60
CSRF_REFUSED = "This form has expired or did not come from this site. Reload the page and try again."
# Checked against when the email is unknown, so both answers take as long.
_DUMMY_HASH = generate_password_hash(secrets.token_hex(16))

csrf = CSRFProtect()
login_manager = LoginManager()
# No IP/browser fingerprint in the session: the generation already ends stolen sessions, and
# "basic" protection would only mark them stale (the hub never asks for a fresh login).
login_manager.session_protection = None


def init_app(app) -> None:
    """Sessions, CSRF tokens and the login limit for `app`, after its blueprints are registered."""
    # A token lives as long as its session (logout and login clear it), as a form left open
    # for hours must still post. No Referer check on HTTPS: SameSite=Lax and the token already
    # refuse cross-site posts, and a browser that strips Referer would lock staff out.
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)
    app.config.setdefault("WTF_CSRF_SSL_STRICT", False)
    csrf.init_app(app)
    login_manager.init_app(app)
    limiter = Limiter(_address, app=app, strategy="fixed-window", storage_uri="hub+redis://",
                      storage_options={"queues": app.extensions["hub"].queues},
                      in_memory_fallback_enabled=True,
                      # A count lost to Redis failing mid-request is logged, never a 500.
                      swallow_errors=True)
    failed = {"methods": ["POST"], "deduct_when": lambda response: response.status_code == 401,
              "on_breach": _too_many}
    # Only a login attempt is counted: every other request skips the limiter's bookkeeping.
    limiter.request_filter(lambda: request.method != "POST" or request.endpoint != "auth.login")
    # Wrapped per app, as each app has its own limiter; the wrapper tests both limits when the
    # view is called (after the CSRF check) and deducts after it.
    view = app.view_functions["auth.login"]
    view = limiter.limit(f"{MAX_FAILURES}/{WINDOW_SECONDS} seconds", key_func=_address_and_email, **failed)(view)
    view = limiter.limit(f"{MAX_FAILURES_PER_IP}/{WINDOW_SECONDS} seconds", **failed)(view)
    app.view_functions["auth.login"] = view
    app.register_error_handler(CSRFError, csrf_refused)


def csrf_refused(exc: CSRFError):
    """A POST whose token is missing, wrong or from an ended session: the same clear 400 page."""
    log.info("refused a %s to %s: %s", request.method, request.path, exc.description)
    return render_template("error.html", error=BadRequest(CSRF_REFUSED)), 400


@bp.app_context_processor
def _template_globals():
    return {"staff": load_staff()}


# Who is logged in ----------------------------------------------------------------------

@login_manager.user_loader
def _load_staff(login_id: str) -> StaffUser | None:
    """The staff user whose login id (id and session generation) the cookie carries; role read
    fresh from the database on each request."""
    user_id = row_id(login_id.partition(":")[0])
    staff = None
    if user_id is not None:
        with current_hub().storage.session() as s:
            staff = s.get(StaffUser, user_id)
            if staff is not None:
                s.expunge(staff)
    if staff is None or staff.get_id() != login_id:
        session.clear()  # ended by a logout or a password change, or the user is gone
        return None
    return staff


@login_manager.unauthorized_handler
def _to_login():
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def load_staff() -> StaffUser | None:
    """The logged-in staff user of this request, or None."""
    return current_user if current_user.is_authenticated else None


def operator_required(view):
    """Retry, replay and resend: operators only (viewers get 403)."""
    @wraps(view)
    def wrapper(*args, **kwargs):
        staff = load_staff()
        if staff is None:
            return login_manager.unauthorized()
        if not staff.can_operate:
            abort(403, description="Only operators can retry, replay or resend. "
                                   "Ask an operator, or an admin to make you one.")
        return view(*args, **kwargs)
    return wrapper


# Rate limit ----------------------------------------------------------------------------

class HubRedisStorage(RedisStorage):
    """limits' Redis storage on the hub's own connection (Queues.connection), looked up at each
    call: queues and counts share one pool, the embedded Redis of a single-machine install is
    started by whichever needs it first, and a replaced connection is followed. The parent's
    client, built from a placeholder URI, never connects: only its Lua scripts are kept, and run
    on the hub's connection."""

    STORAGE_SCHEME: ClassVar[list[str]] = ["hub+redis"]

    def __init__(self, uri: str, queues, **options):
        self.queues = queues
        super().__init__("redis://", **options)

    def get_connection(self, readonly: bool = False):
        return self.queues.connection

    def prefixed_key(self, key: str) -> str:
        return f"hub:limits:{key}"

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        # The window starts at the first counted failure; later ones keep its expiry.
        return int(self.lua_incr_expire([self.prefixed_key(key)], [expiry, amount],
                                        client=self.get_connection()))


def _address() -> str:
    return request.remote_addr or "unknown"


def _email() -> str:
    return normalize_email(request.form.get("email")) or (request.form.get("email") or "").strip().lower()


def _address_and_email() -> str:
    return f"{_address()}:{hashlib.sha256(_email().encode()).hexdigest()[:24]}"


def _too_many(limit):
    """on_breach: the login page again, 429, saying how long to wait (Flask-Limiter's RequestLimit)."""
    # The key's expiry alone (one Redis call; RequestLimit.window would also read the count).
    wait = max(1, min(WINDOW_SECONDS, math.ceil(limit.limiter.storage.get_expiry(limit.key) - time.time())))
    email = _email()
    log.warning("login refused for %s from %s: too many failed attempts", email, _address())
    flash(f"Too many failed attempts. Wait {wait} seconds, then try again.", "error")
    page = render_template("login.html", next=request.form.get("next") or "", email=email)
    return current_app.make_response((page, 429, {"Retry-After": str(wait)}))


def _forget_failures() -> None:
    """After a right password: this email and address start again from nothing (not the IP's count)."""
    pair = _address_and_email()
    for limiter in current_app.extensions.get("limiter", ()):
        for limit in limiter.current_limits:
            if pair in limit.request_args:
                try:
                    limit.limiter.clear(limit.limit, *limit.request_args)
                except (redis_errors.RedisError, OSError) as exc:  # the count expires on its own
                    log.warning("login limit: could not clear a count (%s)", type(exc).__name__)


def _safe_next(target: str | None) -> str:
    """Only a path on this site (never another host) is followed after login."""
    if target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and target.startswith("/") and not target.startswith("//"):
            return target
    return url_for("synclog.index")


# Views ---------------------------------------------------------------------------------

@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return render_template("login.html", next=request.args.get("next", ""), email="")
    email = _email()
    password = request.form.get("password") or ""
    ip = _address()
    target = request.form.get("next") or ""
    with current_hub().storage.session() as s:
        user = s.scalar(select(StaffUser).where(StaffUser.email == email)) if email else None
        if user is None:
            check_password_hash(_DUMMY_HASH, password)  # the same cost as a real check
        elif user.check_password(password):
            s.expunge(user)
        else:
            user = None
    if user is None:
        log.info("failed login for %s from %s", email, ip)
        flash("That email and password do not match a staff account.", "error")
        return render_template("login.html", next=target, email=email), 401
    _forget_failures()
    session.clear()  # a fresh session (and CSRF token) for the logged-in user
    login_user(user)
    log.info("staff %s logged in from %s", email, ip)
    return redirect(_safe_next(target))


@bp.get("/")
def home():
    """The hub's one page for people is the sync log."""
    return redirect(url_for("synclog.index"))


@bp.post("/logout")
def logout():
    """End every session of this user, not only this browser's cookie."""
    staff = load_staff()
    if staff is not None:
        with current_hub().storage.session() as s:
            user = s.get(StaffUser, staff.id)
            if user is not None:
                user.end_sessions()
    logout_user()
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))


__all__ = [
    "MAX_FAILURES",
    "MAX_FAILURES_PER_IP",
    "WINDOW_SECONDS",
    "bp",
    "csrf",
    "init_app",
    "load_staff",
    "login_manager",
    "operator_required",
]
