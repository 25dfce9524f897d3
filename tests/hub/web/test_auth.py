"""Staff access: login, roles, CSRF, the login rate limit, and `hub user add`."""
from __future__ import annotations

import redis as redis_lib
from click.testing import CliRunner
from sqlalchemy import select

from hub import create_app
from hub.models import StaffUser
from hub.web import auth
from tests.hub.web.conftest import PASSWORD, add_staff, csrf_of, log_in, token


def test_pages_need_a_login_and_come_back_after_it(app, hub):
    add_staff(hub, "sam@shop.test")
    client = app.test_client()
    response = client.get("/sync-log/events?source=stripe")
    assert response.status_code == 302 and "/login?next=/sync-log/events?source%3Dstripe" in response.location
    html = client.get(response.location).get_data(as_text=True)
    response = client.post("/login", data={"email": "Sam@Shop.test ", "password": PASSWORD,
                                           "csrf_token": csrf_of(html), "next": "/sync-log/events?source=stripe"})
    assert response.status_code == 302 and response.location == "/sync-log/events?source=stripe"
    assert client.get("/sync-log/events").status_code == 200


def test_login_never_redirects_to_another_site(app, hub):
    add_staff(hub, "sam@shop.test")
    client = app.test_client()
    html = client.get("/login").get_data(as_text=True)
    response = client.post("/login", data={"email": "sam@shop.test", "password": PASSWORD,
                                           "csrf_token": csrf_of(html), "next": "//evil.example/x"})
    assert response.location == "/sync-log/"


def test_wrong_password_and_unknown_email_get_the_same_refusal(app, hub):
    add_staff(hub, "sam@shop.test")
    client = app.test_client()
    wrong = log_in(client, "sam@shop.test", "not the password")
    unknown = log_in(client, "nobody@shop.test", PASSWORD)
    assert wrong.status_code == unknown.status_code == 401
    message = "That email and password do not match a staff account."
    assert message in wrong.get_data(as_text=True) and message in unknown.get_data(as_text=True)
    assert client.get("/sync-log/").status_code == 302


def test_passwords_are_stored_hashed(hub):
    add_staff(hub, "sam@shop.test")
    with hub.storage.session() as s:
        stored = s.scalar(select(StaffUser.password_hash))
    assert PASSWORD not in stored and stored.startswith(("scrypt:", "pbkdf2:"))


def test_a_post_without_the_forms_token_is_refused(app, hub, operator):
    add_staff(hub, "sam@shop.test")
    fresh = app.test_client()
    fresh.get("/login")
    assert fresh.post("/login", data={"email": "sam@shop.test", "password": PASSWORD}).status_code == 400
    assert fresh.post("/login", data={"email": "sam@shop.test", "password": PASSWORD,
                                      "csrf_token": "forged"}).status_code == 400
    # Logged in, an operator's action without the token is refused too (and changes nothing).
    response = operator.post("/sync-log/deliveries/retry", data={"all": "dead"})
    assert response.status_code == 400 and "Reload the page" in response.get_data(as_text=True)
    assert operator.post("/logout").status_code == 400


def test_the_token_changes_at_login(app, hub):
    add_staff(hub, "sam@shop.test")
    client = app.test_client()
    before = csrf_of(client.get("/login").get_data(as_text=True))
    client.post("/login", data={"email": "sam@shop.test", "password": PASSWORD, "csrf_token": before})
    assert token(client) != before


def test_logout_ends_the_session(operator):
    response = operator.post("/logout", data={"csrf_token": token(operator)})
    assert response.status_code == 302 and response.location == "/login"
    assert operator.get("/sync-log/").status_code == 302


def test_a_copied_cookie_stops_working_after_logout(app, hub, operator):
    cookie = operator.get_cookie("session").value
    assert operator.post("/logout", data={"csrf_token": token(operator)}).status_code == 302
    replayed = app.test_client()
    replayed.set_cookie("session", cookie)
    response = replayed.get("/sync-log/")
    assert response.status_code == 302 and response.location.startswith("/login")


def test_logout_ends_every_session_of_that_user_and_no_one_elses(app, hub, operator, viewer):
    laptop = app.test_client()
    assert log_in(laptop, "olive@shop.test").status_code == 302
    assert operator.post("/logout", data={"csrf_token": token(operator)}).status_code == 302
    assert laptop.get("/sync-log/").status_code == 302
    assert viewer.get("/sync-log/").status_code == 200
    assert log_in(laptop, "olive@shop.test").status_code == 302  # and logging in again works
    assert laptop.get("/sync-log/").status_code == 200


def test_a_new_password_ends_every_session_of_that_user(app, hub, operator):
    cookie = operator.get_cookie("session").value
    result = run_user(hub, ["password", "olive@shop.test"], input="a new long password\n" * 2)
    assert result.exit_code == 0, result.output
    assert operator.get("/sync-log/").status_code == 302
    replayed = app.test_client()
    replayed.set_cookie("session", cookie)
    assert replayed.get("/sync-log/").status_code == 302
    assert log_in(replayed, "olive@shop.test", PASSWORD).status_code == 401
    assert log_in(replayed, "olive@shop.test", "a new long password").status_code == 302


def test_the_front_page_is_the_sync_log(client):
    response = client.get("/")
    assert response.status_code == 302 and response.location == "/sync-log/"


def test_pages_tell_the_browser_not_to_frame_sniff_or_leak_them(client, viewer):
    for response in (client.get("/login"), viewer.get("/sync-log/"), viewer.get("/sync-log/events/12345"),
                     viewer.get("/sync-log/dashboard")):
        headers = response.headers
        policy = headers.get("Content-Security-Policy", "")
        assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy, response.request.path
        assert headers.get("X-Frame-Options") == "DENY"
        assert headers.get("X-Content-Type-Options") == "nosniff"
        assert headers.get("Referrer-Policy") == "same-origin"


def test_session_cookie_is_http_only_and_same_site(app, hub):
    add_staff(hub, "sam@shop.test")
    response = log_in(app.test_client(), "sam@shop.test")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_a_secure_base_url_makes_the_cookie_secure(hub):
    hub.settings.HUB_BASE_URL = "https://hub.shop.test"
    app = create_app(hub=hub)
    assert app.config["SESSION_COOKIE_SECURE"] is True


def test_viewers_read_but_cannot_retry_replay_or_resend(viewer):
    assert viewer.get("/sync-log/deliveries").status_code == 200
    t = token(viewer)
    for path in ("/sync-log/deliveries/retry", "/sync-log/events/1/replay", "/sync-log/subscribers/1/resend"):
        response = viewer.post(path, data={"csrf_token": t, "all": "dead"})
        assert response.status_code == 403, path
        assert "Only operators" in response.get_data(as_text=True)
    assert "Retry all" not in viewer.get("/sync-log/deliveries").get_data(as_text=True)


def test_the_tenth_failed_login_in_a_minute_is_refused_even_with_the_right_password(app, hub):
    add_staff(hub, "sam@shop.test")
    client = app.test_client()
    for _ in range(auth.MAX_FAILURES):
        assert log_in(client, "sam@shop.test", "guess").status_code == 401
    refused = log_in(client, "sam@shop.test", PASSWORD)
    assert refused.status_code == 429
    assert 0 < int(refused.headers["Retry-After"]) <= auth.WINDOW_SECONDS
    assert "Too many failed attempts" in refused.get_data(as_text=True)
    # Another address is not locked out by someone else's guessing.
    assert log_in(app.test_client(), "sam@shop.test", PASSWORD, REMOTE_ADDR="10.0.0.9").status_code == 302


def test_the_limit_holds_across_processes_through_redis(app, hub):
    add_staff(hub, "sam@shop.test")
    other_process = create_app(hub=hub)  # a second web process sharing the same Redis
    for n in range(auth.MAX_FAILURES):
        client = (app if n % 2 else other_process).test_client()
        log_in(client, "sam@shop.test", "guess")
    assert log_in(other_process.test_client(), "sam@shop.test", PASSWORD).status_code == 429


def test_the_limit_falls_back_to_memory_when_redis_is_down(app, hub):
    add_staff(hub, "sam@shop.test")
    hub.queues._connection = redis_lib.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    client = app.test_client()
    for _ in range(auth.MAX_FAILURES):
        assert log_in(client, "sam@shop.test", "guess").status_code == 401
    assert log_in(client, "sam@shop.test", PASSWORD).status_code == 429


def test_right_passwords_are_never_counted(app, hub):
    add_staff(hub, "sam@shop.test")
    for _ in range(auth.MAX_FAILURES_PER_IP + 1):
        assert log_in(app.test_client(), "sam@shop.test").status_code == 302
    assert log_in(app.test_client(), "sam@shop.test", "guess").status_code == 401


def test_one_address_guessing_many_accounts_is_refused_whatever_the_email(app, hub):
    add_staff(hub, "sam@shop.test")
    client = app.test_client()
    for n in range(auth.MAX_FAILURES_PER_IP):
        assert log_in(client, f"person{n}@shop.test", "guess").status_code == 401
    refused = log_in(client, "sam@shop.test", PASSWORD)
    assert refused.status_code == 429 and "Too many failed attempts" in refused.get_data(as_text=True)
    assert log_in(app.test_client(), "sam@shop.test", PASSWORD, REMOTE_ADDR="10.0.0.9").status_code == 302


def test_a_successful_login_clears_the_count(app, hub):
    add_staff(hub, "sam@shop.test")
    client = app.test_client()
    for _ in range(auth.MAX_FAILURES - 1):
        log_in(client, "sam@shop.test", "guess")
    assert log_in(client, "sam@shop.test", PASSWORD).status_code == 302
    for _ in range(auth.MAX_FAILURES - 1):
        assert log_in(app.test_client(), "sam@shop.test", "guess").status_code == 401


# hub user add -------------------------------------------------------------------------------

def run_user(hub, args, input=None):
    from hub.cli import main

    env = {"DATABASE_URL": hub.settings.DATABASE_URL, "REDIS_URL": hub.settings.REDIS_URL}
    return CliRunner().invoke(main, ["user", *args], input=input, env=env)


def test_hub_user_add_prompts_twice_and_the_user_can_log_in(app, hub):
    result = run_user(hub, ["add", "Olive@Shop.test", "--role", "operator"],
                      input="a long password\na long password\n")
    assert result.exit_code == 0, result.output
    assert "a long password" not in result.output  # the prompt does not echo it
    assert "added olive@shop.test (operator)" in result.output
    client = app.test_client()
    assert log_in(client, "olive@shop.test", "a long password").status_code == 302
    assert "(operator)" in client.get("/sync-log/").get_data(as_text=True)


def test_hub_user_add_refuses_mismatch_short_passwords_bad_roles_and_duplicates(hub):
    retyped = run_user(hub, ["add", "a@shop.test"], input="a long password\nanother one!!\n"
                                                          "a long password\na long password\n")
    assert retyped.exit_code == 0 and "do not match" in retyped.output
    short = run_user(hub, ["add", "b@shop.test"], input="short\nshort\n")
    assert short.exit_code != 0 and "at least 10 characters" in short.output
    unknown_role = run_user(hub, ["add", "c@shop.test", "--role", "admin"], input="x" * 12 + "\n" + "x" * 12 + "\n")
    assert unknown_role.exit_code == 2
    run_user(hub, ["add", "d@shop.test"], input="d" * 12 + "\n" + "d" * 12 + "\n")
    again = run_user(hub, ["add", "d@shop.test"], input="d" * 12 + "\n" + "d" * 12 + "\n")
    assert again.exit_code == 1 and "already has an account" in again.output
    with hub.storage.session() as s:
        assert s.scalar(select(StaffUser.role).where(StaffUser.email == "d@shop.test")) == "viewer"


def test_hub_user_role_and_list(hub):
    run_user(hub, ["add", "d@shop.test"], input="d" * 12 + "\n" + "d" * 12 + "\n")
    assert run_user(hub, ["role", "d@shop.test", "operator"]).exit_code == 0
    assert "d@shop.test\toperator" in run_user(hub, ["list"]).output
