"""Every candidate query of the sweep is an index search, not a table scan (SQLite's plan).

At 1,000,000 subscriptions a scan per rule and day is what turns a 7 s sweep into
minutes; the indexes live on the models (hub/models/subscriber.py) and the migration.
"""
import re

import pytest
from sqlalchemy import event

from tests.hub.sync.rules.conftest import World, monthly

# The two queries that cannot use an index by design: card months live inside JSON
# (a LIKE prefilter instead), and the largest-id lookup after a bulk insert.
EXEMPT = ("json_each(subscriber.cards)", 'max("trigger".id)')


def plans_of_sweep(world, when):
    seen = []

    def grab(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and not executemany:
            seen.append((statement, parameters))

    event.listen(world.storage.engine, "before_cursor_execute", grab)
    try:
        world.sweep(when)
    finally:
        event.remove(world.storage.engine, "before_cursor_execute", grab)
    with world.storage.engine.connect() as conn:
        return [(st, [r[3] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + st, params)])
                for st, params in seen if not any(x in st for x in EXEMPT)]


@pytest.mark.parametrize("when", ["2026-01-18T06:00", "2026-02-04T06:00", "2026-03-01T06:00"])
def test_sweep_queries_search_indexes(tmp_path, monkeypatch, when):
    monkeypatch.delenv("HUB_TEST_POSTGRES_URL", raising=False)  # SQLite's planner is deterministic
    world = World(tmp_path)
    world.emit("subscription.upserted", "2026-01-01T10:00", monthly(trial_end=None))
    world.emit("payment.failed", "2026-02-01T10:00",
               {"source_id": "in_1", "subscription_source_id": "sub_1", "amount": 2500, "currency": "USD",
                "attempt_count": 1})
    plans = plans_of_sweep(world, when)
    tables = {m for st, _ in plans for m in re.findall(r"FROM (subscription|payment|subscriber)\b", st)}
    assert {"subscription", "payment", "subscriber"} <= tables
    scans = [(" ".join(st.split())[:120], plan) for st, plan in plans
             if any(re.match(r"SCAN (subscription|payment|subscriber)\b", line) for line in plan)]
    assert scans == []
    used = {m for _, plan in plans for line in plan for m in re.findall(r"INDEX (ix_\w+)", line)}
    assert {"ix_subscription_renewal", "ix_subscription_trial", "ix_subscription_ended",
            "ix_subscription_started", "ix_payment_open", "ix_subscriber_last_activity",
            "ix_subscriber_first_order"} <= used
