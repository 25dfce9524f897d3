"""Webhooks arriving together share one commit, and each is answered only once its row is
committed (the path `hub serve` takes on its event loop, hub/rsgi.py)."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg._queries as psycopg_queries
import pytest
from sqlalchemy import select, text

from hub.models import InboxEvent
from hub.web.webhooks import receive_grouped
from tests.conftest import free_port
from tests.samples import SECRETS, signed, stripe_event
from tests.test_cli import _wait_for as wait_for_url

ROOT = Path(__file__).resolve().parents[3]

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
    # On a thread of its own, as granian's loop runs: a test before may leave a loop running
    # on this one (Playwright's sync API does).
    with ThreadPoolExecutor(1) as thread:
        answers = thread.submit(asyncio.run, post_all()).result()
    return [(status, json.loads(body)) for status, body in answers]


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


@pytest.mark.skipif(not os.environ.get("HUB_TEST_POSTGRES_URL"), reason="HUB_TEST_POSTGRES_URL is not set")
@pytest.mark.parametrize("database_url", [pytest.param("postgres", id="postgres")], indirect=True)
def test_hub_serve_on_postgresql_commits_the_webhooks_arriving_during_a_commit_together_after_it(hub, tmp_path):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), DATABASE_URL=hub.settings.DATABASE_URL,
               REDIS_URL=hub.settings.REDIS_URL, STRIPE_WEBHOOK_SECRET=SECRETS["STRIPE_WEBHOOK_SECRET"])
    server = subprocess.Popen([sys.executable, "-m", "hub.cli", "serve", "--port", str(port), "--no-upgrade"],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    answers: dict[int, tuple[int, float]] = {}

    def post(n: int) -> None:
        headers, body = webhook(f"evt_{n}")
        request = urllib.request.Request(f"http://127.0.0.1:{port}/webhooks/stripe", data=body, headers=headers,
                                         method="POST")
        with urllib.request.urlopen(request, timeout=30) as answer:
            answers[n] = (answer.status, time.monotonic())

    try:
        wait_for_url(f"http://127.0.0.1:{port}/healthz", 60)
        # Inserts wait while the test holds this lock: the webhooks pile up in the web process.
        with hub.storage.engine.connect() as blocker:
            blocker.execute(text("LOCK TABLE inbox_event IN SHARE MODE"))
            posts = [threading.Thread(target=post, args=(n,)) for n in range(30)]
            for thread in posts:
                thread.start()
            time.sleep(1.5)
            assert answers == {}, "a webhook was answered before its row could be committed"
            released = time.monotonic()
            blocker.rollback()
        for thread in posts:
            thread.join(timeout=30)
    finally:
        server.terminate()
        server.wait(30)
    assert sorted(answers) == list(range(30))
    assert all(status == 200 and at >= released for status, at in answers.values())
    assert stored_ids(hub) == sorted(f"evt_{n}" for n in range(30))
    with hub.storage.engine.connect() as conn:  # rows one transaction wrote share its xmin
        transactions = conn.execute(text("SELECT count(DISTINCT xmin::text) FROM inbox_event")).scalar()
    # The first webhook's commit, held by the lock, then one for all that arrived meanwhile: the
    # process commits one group at a time.
    assert transactions <= 2


@pytest.mark.skipif(not os.environ.get("HUB_TEST_POSTGRES_URL"), reason="HUB_TEST_POSTGRES_URL is not set")
@pytest.mark.parametrize("database_url", [pytest.param("postgres", id="postgres")], indirect=True)
def test_on_postgresql_a_groups_insert_goes_to_the_server_as_written_without_being_parsed_again(hub, monkeypatch):
    """The web process's CPU per webhook: a group's INSERT is past the size psycopg keeps
    its parse of %s placeholders for, so with them it would be parsed in Python at every
    commit. Written in PostgreSQL's own $n placeholders, it is sent as it is."""
    parsed = []
    for name in ("_query2pg", "_query2pg_nocache"):
        original = getattr(psycopg_queries, name)
        monkeypatch.setattr(psycopg_queries, name,
                            lambda query, *args, original=original: parsed.append(query) or original(query, *args))
    ids = [f"evt_{n}" for n in range(40)]
    answers = post_together(hub, ids)
    assert [status for status, _ in answers] == [200] * 40
    assert stored_ids(hub) == sorted(ids)
    assert [query for query in parsed if query.startswith(b"INSERT INTO inbox_event")] == []
