"""Outbound webhook: signed JSON POSTs a receiver can verify."""
from __future__ import annotations

import json
import time

from connectors.base import Sent
from connectors.webhook import signature, verify
from tests.connectors.conftest import SECRET, consent_item, event_item, profile_item


def test_each_delivery_is_a_signed_json_post(webhook):
    results = webhook.connector().push_batch([event_item(2), consent_item(3), profile_item(1)])
    assert all(isinstance(r, Sent) for r in results.values())
    assert len(webhook.fake.received) == 3  # the receiver verified every signature
    call = webhook.fake.calls[0]
    assert call.headers["Content-Type"] == "application/json"
    assert call.headers["X-Hub-Delivery"] == "1:renewal-7d:2026-12-01"
    expected = signature(SECRET, call.headers["X-Hub-Timestamp"], call.raw)
    assert call.headers["X-Hub-Signature"] == expected
    event = webhook.fake.received[0]
    assert (event["kind"], event["id"], event["data"]["name"]) == (
        "event", "1:renewal-7d:2026-12-01", "Renewal Reminder")
    assert webhook.fake.received[2]["data"]["fields"]["hub_stage"] == "engaged"


def test_signature_is_over_timestamp_dot_body():
    body = json.dumps({"a": 1}).encode()
    now = int(time.time())
    headers = {"X-Hub-Timestamp": str(now), "X-Hub-Signature": signature("k", str(now), body)}
    assert verify("k", headers, body)
    assert not verify("k", headers, body + b" ")  # tampered body
    assert not verify("other", headers, body)  # wrong secret
    assert not verify("k", headers, body, now=now + 3600)  # replayed an hour later
