"""Odd input anywhere a user or a platform can type or send it is answered with a clear 4xx
(400, 404, 411, 413, 422), never a 500: ids in other scripts' digits, ids too big for the
database, numbers beyond a float, JSON nested deeper than the parser goes, odd filters."""
from __future__ import annotations

import io
import time

import pytest
from sqlalchemy import select

from hub.models import InboxEvent
from tests.hub.web.conftest import token
from tests.samples import API_HEADERS, post, signed, stripe_event

CLEAR_REFUSALS = {400, 404, 411, 413, 422}
# The hub's ids are 64-bit integers; each of these is digits, but none is an id.
ODD_IDS = ["²³", "١٢٣", "99999999999999999999", "9" * 40, "-1", "0x1f", "1e400", "１２"]
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("key", ODD_IDS + ["%00", "%ff%fe", "a" * 5000, "nobody@example.com"])
def test_subscriber_lookup_with_an_odd_key_is_a_404(client, key):
    response = client.get(f"/api/subscribers/{key}", headers=API_HEADERS)
    assert response.status_code == 404, response.get_data(as_text=True)
    assert "no subscriber matches" in response.get_json()["error"]


@pytest.mark.parametrize("body", [
    DEEP,
    '{"subscriber": ' + DEEP + ', "quantity": 1}',
    '{"subscriber": "una@example.com", "quantity": 1e400}',
    '{"subscriber": "una@example.com", "quantity": ' + "9" * 400 + '}',
    '{"subscriber": "una@example.com", "quantity": 1, "at": 1e400}',
    '{"subscriber": "una@example.com", "quantity": 1, "at": 99999999999999999999}',
    '{"subscriber": "una@example.com", "quantity": 1, "at": "99999999999999999999"}',
    '{"subscriber": "una@example.com", "quantity": 1, "at": "²³"}',
    '{"subscriber": "una@example.com", "quantity": 1, "at": -99999999999999}',
    '{"subscriber": 99999999999999999999, "quantity": 1}',
    '{"subscriber": "²³", "quantity": 1}',
    '{"subscriber": "una@example.com", "quantity": NaN}',
    '{"subscriber": "una@example.com", "quantity": 1, "metric": {"a": 1}}',
    "\xff\xfe not json",
], ids=lambda body: body[:40])
def test_odd_usage_reports_are_refused_clearly(client, body):
    response = client.post("/api/usage", data=body.encode("utf-8", "surrogatepass"), headers=API_HEADERS,
                           content_type="application/json")
    assert response.status_code in CLEAR_REFUSALS, response.get_data(as_text=True)
    assert response.get_json()["error"]


SYNC_LOG_PAGES = [
    *(f"/sync-log/events?before={v}" for v in ODD_IDS),
    *(f"/sync-log/failed-events?before={v}" for v in ODD_IDS),
    *(f"/sync-log/deliveries?before={v}" for v in ODD_IDS),
    *(f"/sync-log/events?{name}={v}" for name in ("since", "until")
      for v in ("99999999999999999999", "²³", "1e400", "-1", "9999-99-99", "2026-13-45T25:61", "\x00")),
    *(f"/sync-log/dashboard?days={v}" for v in ODD_IDS),
    *(f"/sync-log/dashboard?at={v}" for v in ("99999999999999999999", "²³", "1e400", "0001-01-01", "9999-12-31T23:59")),
    *(f"/sync-log/search?q={v}" for v in [*ODD_IDS, "#²³", "#" + "9" * 30, "%25%5F\\", "\x00", "%ff%fe",
                                          "a" * 5000]),
    "/sync-log/events?source=%ff&status=%00&topic=" + "x" * 5000,
    *(f"/sync-log/subscribers/{v}" for v in ODD_IDS),
    *(f"/sync-log/events/{v}" for v in ODD_IDS),
    *(f"/sync-log/events/{v}/body" for v in ODD_IDS),
]


@pytest.mark.parametrize("path", SYNC_LOG_PAGES)
def test_sync_log_filters_and_search_never_fail(viewer, path):
    response = viewer.get(path)
    assert response.status_code < 500, response.get_data(as_text=True)[:2000]


@pytest.mark.parametrize("path", [
    *(f"/sync-log/events?since={v}" for v in ("99999999999999999999", "1e400", "0001-01-01", "2026-13-45")),
    "/sync-log/events?until=²³", "/sync-log/dashboard?at=99999999999999999999", "/sync-log/dashboard?at=0001-01-01",
])
def test_a_time_filter_the_hub_cannot_use_is_ignored_with_a_message(viewer, path):
    response = viewer.get(path)
    assert response.status_code == 200
    assert "is not a date and time between 1970 and 9998" in response.get_data(as_text=True)


@pytest.mark.parametrize("value", ODD_IDS)
def test_retrying_odd_delivery_ids_retries_nothing(operator, value):
    response = operator.post("/sync-log/deliveries/retry",
                             data={"csrf_token": token(operator), "delivery_id": value})
    assert response.status_code == 302
    assert "Nothing to retry" in operator.get(response.location).get_data(as_text=True)


@pytest.mark.parametrize("path", ["/sync-log/events/99999999999999999999/replay",
                                  "/sync-log/subscribers/99999999999999999999/resend"])
def test_actions_on_ids_too_big_to_exist_are_a_404(operator, path):
    assert operator.post(path, data={"csrf_token": token(operator)}).status_code == 404


def chunked(client, source: str, body: bytes, headers: dict):
    """A POST whose body comes chunked, without Content-Length, the way granian hands it on:
    the header in the environ, the body already de-chunked in wsgi.input."""
    environ = {"wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True,
               "HTTP_TRANSFER_ENCODING": "chunked"}
    return client.open(f"/webhooks/{source}", method="POST", headers=headers, environ_overrides=environ)


def test_a_chunked_webhook_without_content_length_is_read(client, hub):
    headers, body = signed("stripe", stripe_event("customer.created", {"id": "cus_chunked", "object": "customer"},
                                                  event_id="evt_chunked"))
    response = chunked(client, "stripe", body, headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"duplicate": False, "received": True}
    with hub.storage.session() as s:
        assert s.scalar(select(InboxEvent.body).where(InboxEvent.event_id == "evt_chunked")) == body


def test_a_chunked_webhook_over_the_limit_is_a_413(client, hub):
    hub.settings.HUB_MAX_BODY_BYTES = 1000
    headers, body = signed("stripe", stripe_event("customer.created", {"id": "cus_big", "object": "customer",
                                                                       "description": "x" * 5000}))
    assert chunked(client, "stripe", body, headers).status_code == 413


def test_a_body_of_unknown_length_is_a_411(client):
    headers, body = signed("stripe", stripe_event("customer.created", {"id": "cus_x", "object": "customer"}))
    environ = {"wsgi.input": io.BytesIO(body), "HTTP_TRANSFER_ENCODING": "gzip"}
    response = client.open("/webhooks/stripe", method="POST", headers=headers, environ_overrides=environ)
    assert response.status_code == 411
    assert "Content-Length" in response.get_json()["error"]


@pytest.mark.parametrize("length", ["-5", "abc", "²", "9" * 30])
def test_a_bad_content_length_is_refused_clearly(client, length):
    headers, body = signed("stripe", stripe_event("customer.created", {"id": "cus_y", "object": "customer"}))
    response = client.open("/webhooks/stripe", method="POST", headers=headers,
                           environ_overrides={"wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": length})
    assert response.status_code in {411, 413}, response.get_data(as_text=True)



@pytest.mark.parametrize("source,setting", [("stripe", "STRIPE_WEBHOOK_SECRET"),
                                            ("shopify", "SHOPIFY_WEBHOOK_SECRET"),
                                            ("chargebee", "CHARGEBEE_WEBHOOK_PASSWORD")])
def test_a_webhook_for_an_unconfigured_source_is_a_503_that_names_the_setting(client, hub, source, setting):
    setattr(hub.settings, setting, "")
    response = post(client, source, stripe_event("customer.created", {"id": "cus_z", "object": "customer"}),
                    topic="customers/create")
    assert response.status_code == 503
    assert response.get_json()["error"].startswith(f"{source} webhooks are not configured (set ")
    assert setting in response.get_json()["error"]


def test_a_stripe_signature_dated_an_hour_ahead_is_refused_like_an_old_one(client):
    event = stripe_event("customer.created", {"id": "cus_future", "object": "customer"})
    ahead = post(client, "stripe", event, timestamp=int(time.time()) + 3600)
    assert ahead.status_code == 401 and ahead.get_json() == {"error": "signature invalid"}
    assert post(client, "stripe", event, timestamp=int(time.time()) + 60).status_code == 200  # clock skew
