"""The fault suite, short: N signed webhooks through `hub run` while its worker, Redis and web
server are killed, the database is held locked, a poison body and a slow client arrive, and
Klaviyo throttles. Every webhook must be acknowledged, stored, applied and delivered once.
The full run, with its numbers, is benchmarks/faults.py."""
from __future__ import annotations

import pytest

from benchmarks.faults import run

EVENTS = 200


@pytest.mark.faults
@pytest.mark.xfail(strict=False, reason="`hub run` does not restart a killed child yet: the first kill stops the hub")
def test_every_webhook_comes_out_once_through_kills_a_locked_database_and_bad_clients():
    # 10 s of webhooks with the faults pressed into them (the database held 2 s); one 503 and
    # a tenth of the calls throttled at Klaviyo. The bound leaves room for the hub's
    # backstop, which pushes retries once a minute.
    outcome = run(events=EVENTS, rate=20, seconds=85, lock_seconds=2, quiet_seconds=75, klaviyo_5xx=1)
    report = "\n".join([outcome.line(), *outcome.faults, *outcome.notes])
    assert outcome.sent == outcome.acknowledged == EVENTS, report
    assert outcome.stored == outcome.applied == outcome.acknowledged, report
    assert outcome.delivered == outcome.acknowledged, report
    assert (outcome.lost, outcome.duplicated) == (0, 0), report
