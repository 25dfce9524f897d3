"""The suite every connector passes (the Meltano get_tap_test_class idea), against its stand-in."""
from __future__ import annotations

from dataclasses import fields, replace

from sqlalchemy import select

from connectors import CONNECTORS
from connectors.base import Failed, RetryAfter, Sent
from connectors.ratelimit import Limiter
from hub.db.engine import Storage
from hub.models import Base, Delivery, DeliveryAttempt, now_utc
from hub.sync import outbox
from tests.connectors.conftest import SECRET


def test_2xx_is_sent(world):
    items = world.items()
    results = world.connector().push_batch(items)
    assert set(results) == {i.delivery_id for i in items}
    for result in results.values():
        assert isinstance(result, Sent), result
        assert 200 <= result.http_status < 300
        assert result.latency_ms is not None


def test_429_is_retried_after_the_tools_retry_after_and_nothing_is_asked_meanwhile(world):
    world.fake.fail(429, retry_after=7)
    connector = world.connector()
    connector.use_limiter(Limiter(), rate_wait=0.01)  # as a worker's push
    results = connector.push(world.items())
    for result in results.values():
        # Refused, or held without a request by the pause the refusal set on its limit.
        assert isinstance(result, RetryAfter) and 6 < result.seconds <= 7, result
    throttled = [r for r in results.values() if r.http_status == 429]
    assert throttled and all(r.seconds == 7 for r in throttled)
    assert len(world.fake.calls) <= len(throttled)


def test_5xx_is_retried(world):
    world.fake.fail(503)
    results = world.connector().push_batch(world.items())
    assert all(isinstance(r, RetryAfter) and r.http_status == 503 for r in results.values()), results


def test_timeout_is_retried(world):
    world.fake.slow(1.5)
    results = world.connector(timeout=0.3).push_batch(world.items())
    for result in results.values():
        assert isinstance(result, RetryAfter), result
        assert result.http_status is None and "no answer" in result.message


def test_other_4xx_fails_with_the_tools_message(world):
    world.fake.fail(world.client_error, message="The tool says: email is not valid")
    results = world.connector().push_batch(world.items())
    for result in results.values():
        assert isinstance(result, Failed), result
        assert result.http_status == world.client_error
        assert "The tool says: email is not valid" in result.message


def test_wrong_credentials_fail_without_retrying(world):
    secret_keys = {f.name for f in fields(world.settings) if f.metadata.get("secret")}
    wrong = {k: "wrong-key" for k in CONNECTORS[world.name].settings_keys if k in secret_keys}
    world.settings = replace(world.settings, **wrong)
    results = world.connector().push_batch(world.items())
    assert all(isinstance(r, Failed) and r.http_status in (401, 403) for r in results.values()), results


def test_attempt_log_never_holds_a_secret(world, tmp_path):
    storage = Storage("sqlite:///" + str(tmp_path / "t.db"))
    Base.metadata.create_all(storage.engine)
    with storage.session() as session:
        for item in world.items():
            session.add(Delivery(connector=world.name, kind=item.kind, subscriber_id=item.delivery_id,
                                 idempotency_key=item.key, payload=item.payload))
    now = now_utc()
    # A tool that echoes the credential back in its error text, first for good, then for a while.
    world.fake.fail(world.client_error, message=f"invalid key {SECRET}")
    pushed = outbox.push_batch(storage, world.settings, world.name, now=now, limiter=Limiter())
    assert pushed["dead"] == len(world.items())
    with storage.session() as session:
        outbox.retry(session, dead=True, now=now)
    world.fake.heal()
    world.fake.fail(429, message=f"slow down {SECRET}", retry_after=1)
    pushed = outbox.push_batch(storage, world.settings, world.name, now=now, limiter=Limiter())
    assert pushed["retry"] == len(world.items())
    with storage.session() as session:
        attempts = session.scalars(select(DeliveryAttempt)).all()
        deliveries = session.scalars(select(Delivery)).all()
    assert len(attempts) >= 2 * len(deliveries)
    assert all(a.message and SECRET not in a.message and "***" in a.message for a in attempts)
    assert all(SECRET not in (d.last_error or "") for d in deliveries)
    assert all(SECRET not in (a.request_id or "") for a in attempts)
    storage.dispose()
