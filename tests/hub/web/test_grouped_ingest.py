"""Webhooks arriving together share one commit, and each is answered only once its row is
committed (the path `hub serve` takes on its event loop, hub/rsgi.py)."""
from __future__ import annotations

import asyncio
import json

from sqlalchemy import select, text

from hub.models import InboxEvent
from hub.web.webhooks import receive_grouped
from tests.samples import signed, stripe_event

# Refuses one webhook when its transaction commits (PostgreSQL: a deferred constraint trigger)
# or as it is inserted (SQLite has no deferred triggers): either way its group's commit fails.
REFUSING_TRIGGER = {
    "postgresql": ["CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$ "
                   "BEGIN IF NEW.event_id = 'evt_refused' THEN RAISE EXCEPTION 'refused'; END IF; "
                   "RETURN NULL; END $$",
                   "CREATE CONSTRAINT TRIGGER refuse_one AFTER INSERT ON inbox_event "
                   "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_one()"],
    "sqlite": ["CREATE TRIGGER inbox.refuse_one BEFORE INSERT ON inbox_event "
               "WHEN NEW.event_id = 'evt_refused' BEGIN SELECT RAISE(ABORT, 'refused'); END"],
}
DROP_TRIGGER = {"postgresql": ["DROP TRIGGER refuse_one ON inbox_event", "DROP FUNCTION refuse_one()"],
                "sqlite": ["DROP TRIGGER inbox.refuse_one"]}


def webhook(event_id: str) -> tuple[dict, bytes]:
    headers, body = signed("stripe", stripe_event("customer.created", {"id": f"cus_{event_id}", "object": "customer"},
                                                  event_id=event_id))
    return {name.lower(): value for name, value in headers.items()}, body


def post_together(hub, event_ids: list[str]) -> list[tuple[int, dict]]:
    """The answers to webhooks that reach one web process at the same moment."""
    async def post_all():
        answers = await asyncio.gather(*(receive_grouped(hub, "stripe", *webhook(e), "127.0.0.1") for e in event_ids))
        hub.storage.inbox_writer.close()  # its connection belongs to this loop
        return answers
    return [(status, json.loads(body)) for status, body in asyncio.run(post_all())]


def stored_ids(hub) -> list[str]:
    with hub.storage.session() as s:
        return sorted(s.scalars(select(InboxEvent.event_id)))


def test_webhooks_arriving_together_are_each_stored_and_answered_in_fewer_commits(hub):
    ids = [f"evt_{n}" for n in range(40)] + ["evt_3", "evt_7"]  # two retries of webhooks in the same group
    answers = post_together(hub, ids)
    assert [status for status, _ in answers] == [200] * len(ids)
    assert [answer["duplicate"] for _, answer in answers] == [False] * 40 + [True, True]
    assert stored_ids(hub) == sorted(set(ids))
    assert hub.storage.inbox_writer.commits < len(ids)
    # A later retry of a stored webhook is still a duplicate.
    assert post_together(hub, ["evt_5", "evt_new"]) == [(200, {"duplicate": True, "received": True}),
                                                         (200, {"duplicate": False, "received": True})]


def test_a_commit_that_fails_answers_503_to_every_webhook_of_its_group_and_stores_none(hub):
    dialect = hub.storage.engine.dialect.name
    with hub.storage.engine.begin() as conn:
        for statement in REFUSING_TRIGGER[dialect]:
            conn.execute(text(statement))
    answers = post_together(hub, ["evt_a", "evt_b", "evt_refused", "evt_c"])
    assert [status for status, _ in answers] == [503] * 4
    assert all("retry" in answer["error"] for _, answer in answers)
    assert stored_ids(hub) == []
    # The writer recovers: the platform's retries of the others are stored.
    with hub.storage.engine.begin() as conn:
        for statement in DROP_TRIGGER[dialect]:
            conn.execute(text(statement))
    assert [status for status, _ in post_together(hub, ["evt_a", "evt_b", "evt_c"])] == [200] * 3
    assert stored_ids(hub) == ["evt_a", "evt_b", "evt_c"]
