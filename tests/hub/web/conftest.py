"""Staff users and logged-in test clients for the sync log pages."""
from __future__ import annotations

import re

import pytest

from hub.models import StaffUser

PASSWORD = "correct horse battery"


def add_staff(hub, email: str, role: str = "viewer", password: str = PASSWORD) -> None:
    with hub.storage.session() as s:
        user = StaffUser(email=email, role=role)
        user.set_password(password)
        s.add(user)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def log_in(client, email: str, password: str = PASSWORD, **environ):
    token = csrf_of(client.get("/login").get_data(as_text=True))
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token},
                       environ_base=environ)


def token(client, path: str = "/sync-log/") -> str:
    """The session's CSRF token, read from a page as a browser would."""
    return csrf_of(client.get(path).get_data(as_text=True))


@pytest.fixture
def operator(app, hub):
    add_staff(hub, "olive@shop.test", "operator")
    client = app.test_client()
    assert log_in(client, "olive@shop.test").status_code == 302
    return client


@pytest.fixture
def viewer(app, hub):
    add_staff(hub, "victor@shop.test", "viewer")
    client = app.test_client()
    assert log_in(client, "victor@shop.test").status_code == 302
    return client
