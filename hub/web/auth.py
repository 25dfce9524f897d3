"""Staff login and logout, CSRF tokens, roles, and the login rate limit.

Threats this module answers:
- Password guessing: failed logins are counted per (email, IP) and per IP in Redis, so
  the limit holds across every web process; after MAX_FAILURES in a minute further
  attempts are refused with 429 until the minute is over, right password or not.
  When Redis is unreachable the counters fall back to this process's memory (weaker
  with several processes, but never no limit at all).
- Cross-site requests: every form carries a per-session token that every POST to the
  staff pages must echo (the session cookie is also SameSite=Lax, set in create_app).
- Session fixation: the session is cleared and a new CSRF token issued at login.
- Stolen or left-behind cookies: the cookie is signed, not stored, so it carries the user's
  session generation; logout and a password change move it on (StaffUser.end_sessions), and
  every cookie of that user issued before stops working, on every device.
- Account discovery: an unknown email costs the same password-hash check as a known one
  and gets the same answer.
Webhooks (plain WSGI in front of Flask) and the JSON API (bearer token, no cookie) are
not cookie-authenticated, so they need no CSRF token.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from functools import wraps
from urllib.parse import urlsplit

from flask import Blueprint, abort, flash, g, redirect, render_template, request, session, url_for
from redis import exceptions as redis_errors
from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash

from hub.models import StaffUser
from hub.values import normalize_email
from hub.web import current_hub

log = logging.getLogger(__name__)
bp = Blueprint("auth", __name__)

CSRF_FIELD = "csrf_token"
CSRF_KEY = "_csrf"
GENERATION_KEY = "staff_generation"
# Failed logins allowed per (email, IP) in a window; the next attempt in it is refused (429).
MAX_FAILURES = 9
# Failed logins allowed per IP whatever the email, against one address trying many accounts.
MAX_FAILURES_PER_IP = 30
WINDOW_SECONDS = 60
# Checked against when the email is unknown, so both answers take as long.
_DUMMY_HASH = generate_password_hash(secrets.token_hex(16))


# CSRF ---------------------------------------------------------------------------------

def csrf_token() -> str:
    """This session's CSRF token (created on first use); every form renders it."""
    token = session.get(CSRF_KEY)
    if not token:
        token = session[CSRF_KEY] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    """Refuse a POST whose form token does not match the session's (400)."""
    if request.method != "POST":
        return
    expected = session.get(CSRF_KEY)
    given = request.form.get(CSRF_FIELD) or request.headers.get("X-CSRF-Token") or ""
    if not expected or not hmac.compare_digest(expected.encode(), given.encode()):
        abort(400, description="This form has expired or did not come from this site. "
                               "Reload the page and try again.")


@bp.app_context_processor
def _template_globals():
    return {"staff": load_staff() if "staff_id" in session else None}


bp.record_once(lambda state: state.app.jinja_env.globals.update(csrf_token=csrf_token))


# Who is logged in ----------------------------------------------------------------------

def load_staff() -> StaffUser | None:
    """The logged-in staff user of this request (role read fresh from the database)."""
    if "staff" in g:
        return g.staff
    staff = None
    user_id = session.get("staff_id")
    if user_id is not None:
        with current_hub().storage.session() as s:
            staff = s.get(StaffUser, user_id)
            if staff is not None:
                s.expunge(staff)
        if staff is None or staff.session_generation != session.get(GENERATION_KEY):
            session.clear()  # ended by a logout or a password change, or the user is gone
            staff = None
    g.staff = staff
    return staff


def login_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        if load_staff() is None:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)
    return wrapper


def operator_required(view):
    """Retry, replay and resend: operators only (viewers get 403)."""
    @wraps(view)
    def wrapper(*args, **kwargs):
        staff = load_staff()
        if staff is None:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        if not staff.can_operate:
            abort(403, description="Only operators can retry, replay or resend. "
                                   "Ask an operator, or an admin to make you one.")
        return view(*args, **kwargs)
    return wrapper


# Rate limit ----------------------------------------------------------------------------

class LoginThrottle:
    """Failed-login counters per key and fixed one-minute window: Redis first, memory second."""

    def __init__(self, window: int = WINDOW_SECONDS):
        self.window = window
        self._local: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()
        self._redis_down_until = 0.0

    def _redis(self):
        if time.monotonic() < self._redis_down_until:
            return None
        try:
            return current_hub().queues.connection
        except Exception as exc:  # embedded Redis failed to start: count in memory
            self._redis_failed(exc)
            return None

    def _redis_failed(self, exc) -> None:
        log.warning("login throttle: Redis unreachable, counting in this process (%s)", exc)
        # Do not pay a connect timeout on every login while Redis is down.
        self._redis_down_until = time.monotonic() + 30

    def failures(self, key: str) -> tuple[int, int]:
        """(failed attempts in the current window, seconds until it ends)."""
        redis = self._redis()
        if redis is not None:
            try:
                pipe = redis.pipeline()
                pipe.get(key)
                pipe.ttl(key)
                count, ttl = pipe.execute()
                return int(count or 0), max(1, int(ttl)) if ttl and ttl > 0 else self.window
            except (redis_errors.RedisError, OSError) as exc:  # Redis unreachable: memory instead
                self._redis_failed(exc)
        with self._lock:
            started, count = self._local.get(key, (0.0, 0))
            left = self.window - (time.monotonic() - started)
            return (count, max(1, int(left) + 1)) if left > 0 else (0, self.window)

    def fail(self, key: str) -> int:
        """Count one failed attempt; returns the count in this window."""
        redis = self._redis()
        if redis is not None:
            try:
                pipe = redis.pipeline()
                # The window starts at the first failure (SET NX EX); INCR keeps its expiry.
                pipe.set(key, 0, ex=self.window, nx=True)
                pipe.incr(key)
                return int(pipe.execute()[1])
            except (redis_errors.RedisError, OSError) as exc:
                self._redis_failed(exc)
        with self._lock:
            now = time.monotonic()
            if len(self._local) > 10_000:  # drop finished windows
                self._local = {k: v for k, v in self._local.items() if now - v[0] < self.window}
            started, count = self._local.get(key, (now, 0))
            if now - started >= self.window:
                started, count = now, 0
            self._local[key] = (started, count + 1)
            return count + 1

    def reset(self) -> None:
        """Forget the in-process counters and any remembered Redis outage (tests, restarts)."""
        with self._lock:
            self._local.clear()
        self._redis_down_until = 0.0

    def clear(self, key: str) -> None:
        redis = self._redis()
        if redis is not None:
            try:
                redis.delete(key)
            except (redis_errors.RedisError, OSError) as exc:
                self._redis_failed(exc)
        with self._lock:
            self._local.pop(key, None)


throttle = LoginThrottle()


def _keys(email: str, ip: str) -> tuple[str, str]:
    who = hashlib.sha256(email.encode()).hexdigest()[:24]
    return f"hub:login-failures:{ip}:{who}", f"hub:login-failures:{ip}"


def _too_many(email: str, ip: str) -> int:
    """Seconds to wait when this email+IP (or this IP) failed too often this minute, else 0."""
    pair, address = _keys(email, ip)
    count, left = throttle.failures(pair)
    if count >= MAX_FAILURES:
        return left
    count, left = throttle.failures(address)
    return left if count >= MAX_FAILURES_PER_IP else 0


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
    check_csrf()
    email = normalize_email(request.form.get("email")) or (request.form.get("email") or "").strip().lower()
    password = request.form.get("password") or ""
    ip = request.remote_addr or "unknown"
    target = request.form.get("next") or ""
    wait = _too_many(email, ip)
    if wait:
        log.warning("login refused for %s from %s: too many failed attempts", email, ip)
        flash(f"Too many failed attempts. Wait {wait} seconds, then try again.", "error")
        return render_template("login.html", next=target, email=email), 429, {"Retry-After": str(wait)}
    with current_hub().storage.session() as s:
        user = s.scalar(select(StaffUser).where(StaffUser.email == email)) if email else None
        if user is None:
            check_password_hash(_DUMMY_HASH, password)  # the same cost as a real check
            ok, user_id, generation = False, None, None
        else:
            ok, user_id, generation = user.check_password(password), user.id, user.session_generation
    pair, address = _keys(email, ip)
    if not ok:
        throttle.fail(pair)
        throttle.fail(address)
        log.info("failed login for %s from %s", email, ip)
        flash("That email and password do not match a staff account.", "error")
        return render_template("login.html", next=target, email=email), 401
    throttle.clear(pair)
    session.clear()  # a fresh session (and CSRF token) for the logged-in user
    session["staff_id"] = user_id
    session[GENERATION_KEY] = generation
    csrf_token()
    log.info("staff %s logged in from %s", email, ip)
    return redirect(_safe_next(target))


@bp.get("/")
def home():
    """The hub's one page for people is the sync log."""
    return redirect(url_for("synclog.index"))


@bp.post("/logout")
def logout():
    """End every session of this user, not only this browser's cookie."""
    check_csrf()
    staff = load_staff()
    if staff is not None:
        with current_hub().storage.session() as s:
            user = s.get(StaffUser, staff.id)
            if user is not None:
                user.end_sessions()
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))


__all__ = [
    "MAX_FAILURES",
    "WINDOW_SECONDS",
    "bp",
    "check_csrf",
    "csrf_token",
    "load_staff",
    "login_required",
    "operator_required",
    "throttle",
]
