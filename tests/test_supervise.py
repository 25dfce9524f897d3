"""`hub run` as a supervisor: any child killed comes back while the rest keep serving; a slow
client holds nothing; stopping it, or killing it, leaves no process behind."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path

import psutil
import pytest
from sqlalchemy import text

from hub.commands.run import stack
from hub.config import Settings
from standins.klaviyo import FakeKlaviyo
from tests.conftest import RedisServer, free_port
from tests.samples import API_HEADERS, SECRETS, signed, stripe_event

PROJECT = Path(__file__).resolve().parents[1]
READ_TIMEOUT = 3


class HubRun:
    """`hub run` in a folder of its own: SQLite and embedded Redis unless `options` name others,
    only the test secrets and `settings` set."""

    def __init__(self, folder: Path, options: tuple[str, ...] = (), settings: dict | None = None):
        folder.mkdir(exist_ok=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = folder / "hub-run.log"
        env = {k: v for k, v in os.environ.items() if k not in {f.name for f in fields(Settings)}}
        env.update(DATABASE_URL=f"sqlite:///{folder / 'hub.db'}", PYTHONPATH=str(PROJECT),
                   HUB_SECRET_KEY=SECRETS["HUB_SECRET_KEY"], HUB_API_TOKEN=SECRETS["HUB_API_TOKEN"],
                   STRIPE_WEBHOOK_SECRET=SECRETS["STRIPE_WEBHOOK_SECRET"], HUB_REQUEST_READ_TIMEOUT=str(READ_TIMEOUT),
                   **(settings or {}))
        with self.log.open("wb") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "hub.cli", "run", "--port", str(self.port),
                                             *options], cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.customers = 0
        self.embedded = "--redis-url" not in options
        self.last_answer = "none asked yet"
        # The first start imports every child's code on a machine the other test processes
        # keep busy; what the tests measure (a restart, an answer) has windows of its own.
        self.wait_whole(120)

    def wait_whole(self, seconds: float) -> None:
        """Until the web server answers and the worker (and embedded Redis) run again."""
        self.wait_until(self.healthy, seconds, f"{self.base}/healthz")
        self.wait_until(lambda: self.child("worker") and (self.child("redis-server") or not self.embedded),
                        seconds, "worker and Redis")

    def wait_until(self, condition, seconds: float, what: str) -> None:
        """`wait_until`, with the last answer the hub gave and the end of its log when the time
        is up."""
        try:
            wait_until(condition, seconds, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nlast answer: {self.last_answer}\n"
                                 f"hub run's log:\n{self.output()[-3000:]}") from None

    def healthy(self) -> bool:
        return self.get("/healthz") == 200

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def child(self, name: str) -> psutil.Process | None:
        """The direct child named as the fault suite finds it: by command line."""
        for child in psutil.Process(self.process.pid).children():
            cmdline = " ".join(child.cmdline())
            if name in cmdline and child.status() != psutil.STATUS_ZOMBIE:
                return child
        return None

    def tree(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def get(self, path: str, headers: dict | None = None, timeout: float = 2):
        """The answer's status, None when none came; kept with its body's start in
        `last_answer`, which a wait that runs out shows."""
        try:
            with urllib.request.urlopen(urllib.request.Request(self.base + path, headers=headers or {}),
                                        timeout=timeout) as answer:
                self.last_answer = f"{path}: {answer.status} {answer.read(500)!r}"
                return answer.status
        except urllib.error.HTTPError as exc:
            with exc:
                self.last_answer = f"{path}: {exc.code} {exc.read(500)!r}"
            return exc.code
        except OSError as exc:
            self.last_answer = f"{path}: no answer ({type(exc).__name__}: {exc})"
            return None

    def post_customer(self, timeout: float = 5, n: int | None = None) -> tuple[int, str]:
        """POST a signed Stripe customer.created (the next of this host's, or number `n`);
        its status and the customer's email."""
        if n is None:
            self.customers += 1
            n = self.customers
        email = f"sup{n}@example.com"
        event = stripe_event("customer.created", {"id": f"cus_sup{n}", "object": "customer", "email": email,
                                                  "name": "Sam Supervised", "created": 1_700_000_000},
                             event_id=f"evt_sup{n}")
        headers, body = signed("stripe", event)
        request = urllib.request.Request(f"{self.base}/webhooks/stripe", data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, email

    def applied(self, email: str) -> bool:
        return self.get(f"/api/subscribers/{email}", API_HEADERS) == 200

    def stop(self):
        """Ctrl-C; leftovers killed (and the log shown) if it does not stop within 30 s."""
        if self.process.poll() is not None:
            return
        tree = self.tree()
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            for proc in [*tree, psutil.Process(self.process.pid)]:
                try:
                    proc.kill()
                except psutil.NoSuchProcess:
                    pass
            raise AssertionError("hub run did not stop within 30 s:\n" + self.output()[-4000:]) from None


def wait_until(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {seconds} s")


def gone(processes: list[psutil.Process]) -> bool:
    for proc in processes:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def one_hub_run(tmp_path_factory):
    run = HubRun(tmp_path_factory.mktemp("hub-run"))
    yield run
    run.stop()


@pytest.fixture
def hub_run(one_hub_run):
    """The module's `hub run`, whole again after the previous test's fault: each test starts from
    a web server that answers, a worker and Redis."""
    one_hub_run.wait_whole(60)
    return one_hub_run


def test_a_killed_worker_is_restarted_and_applies_the_next_webhook(hub_run):
    worker = hub_run.child("-m hub.cli worker")
    cron = [p for p in worker.children(recursive=True)]
    worker.send_signal(signal.SIGKILL)
    wait_until(lambda: gone([worker, *cron]), 5, "the killed worker's cron and helpers")
    status, email = hub_run.post_customer()
    assert status == 200
    hub_run.wait_until(lambda: hub_run.applied(email), 30, "the webhook applied by the restarted worker")
    assert "restarted worker (exit -9)" in hub_run.output()


def test_a_killed_web_server_answers_again_within_seconds(hub_run):
    web = hub_run.child("-m hub.cli serve")
    web_worker = web.children()
    web.send_signal(signal.SIGKILL)
    wait_until(lambda: gone([web, *web_worker]), 5, "the killed server's own web worker")
    # A restart is a second's delay and a start (imports, granian's worker): seconds when idle,
    # more on two cores the rest of the suite keeps busy.
    hub_run.wait_until(hub_run.healthy, 30, "/healthz after the web server was killed")
    assert "restarted web (exit -9)" in hub_run.output()


def test_webhooks_are_answered_while_redis_is_down_and_applied_once_it_is_back(hub_run):
    hub_run.child("redis-server").send_signal(signal.SIGKILL)
    status, email = hub_run.post_customer()  # within the restart delay: stored, answered
    assert status == 200
    hub_run.wait_until(lambda: hub_run.applied(email), 30, "the webhook applied after Redis came back")
    assert "restarted redis-server (exit -9)" in hub_run.output()


def test_a_client_holding_half_a_body_does_not_delay_other_webhooks(hub_run):
    with socket.create_connection(("127.0.0.1", hub_run.port)) as slow:
        slow.sendall(b"POST /webhooks/stripe HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 4000\r\n\r\n" + b'{"id": "evt_slow", "type": "customer.created"')
        time.sleep(0.2)
        started = time.monotonic()
        status, _ = hub_run.post_customer(timeout=3)
        # Held behind the slow client, it would wait out most of READ_TIMEOUT.
        assert status == 200 and time.monotonic() - started < READ_TIMEOUT - 1
        assert hub_run.get("/healthz") == 200
        # The slow client is answered 408 once its time is up, not held forever.
        slow.settimeout(READ_TIMEOUT + 5)
        assert slow.recv(64).startswith(b"HTTP/1.1 408")


def test_killing_hub_run_outright_leaves_no_process_behind(tmp_path):
    run = HubRun(tmp_path)
    tree = run.tree()
    assert len(tree) >= 4  # redis-server, web and its worker, worker and its cron
    run.process.send_signal(signal.SIGKILL)
    run.process.wait(timeout=5)
    try:
        wait_until(lambda: gone(tree), 15, "every child of the killed hub run")
        assert not listening(run.port)
    finally:
        for proc in tree:
            if proc.is_running():
                proc.kill()


def test_ctrl_c_stops_everything_quietly_and_says_what_to_set_up(tmp_path):
    run = HubRun(tmp_path)
    tree = run.tree()
    run.stop()
    assert run.process.returncode == 0
    assert gone(tree) and not listening(run.port)
    output = run.output()
    assert "Traceback" not in output
    assert "hub user add you@example.com --role operator" in output
    assert "webhooks stripe: configured" in output
    assert "webhooks shopify: not configured: set SHOPIFY_WEBHOOK_SECRET" in output
    # Only the data stays: the Redis socket, pid and configuration files are removed.
    assert not [p.name for p in tmp_path.iterdir() if p.suffix in (".sock", ".pid", ".conf", ".settings")]



def test_hub_run_starts_the_worker_processes_asked_for_with_cron_on_the_first_only():
    children = stack("127.0.0.1", 8000, 1, 3, cron=True)
    workers = [c for c in children if "worker" in c.argv]
    assert [c.name for c in workers] == ["worker", "worker 2", "worker 3"]
    assert ["--no-cron" in c.argv for c in workers] == [False, True, True]
    # Another host's `hub run --no-cron` adds workers without a second cron.
    assert all("--no-cron" in c.argv for c in stack("127.0.0.1", 8000, 1, 2, cron=False)[1:])


@pytest.mark.skipif(not os.environ.get("HUB_TEST_POSTGRES_URL"), reason="HUB_TEST_POSTGRES_URL is not set")
@pytest.mark.parametrize("database_url", [pytest.param("postgres", id="postgres")], indirect=True)
def test_two_hosts_on_one_postgresql_and_redis_store_apply_and_deliver_each_webhook_once(hub, tmp_path):
    """docs/throughput.md, "Scaling out": `hub run` with the shared database and Redis on one
    host, the same with --no-cron on another; a platform's retry may reach either host."""
    redis = RedisServer(tmp_path).start()
    with FakeKlaviyo(api_key="pk_hosts") as klaviyo:
        shared = ("--database-url", hub.settings.DATABASE_URL, "--redis-url", redis.url)
        settings = {"KLAVIYO_API_KEY": "pk_hosts", "KLAVIYO_BASE_URL": klaviyo.url}
        hosts = [HubRun(tmp_path / "host-a", shared, settings),
                 HubRun(tmp_path / "host-b", (*shared, "--no-cron"), settings)]
        try:
            # Each host gets every other webhook, and every fifth is retried on the other host,
            # eight at a time: both hosts' workers drain and push side by side.
            posts = [(hosts[n % 2], n) for n in range(1, 41)] + [(hosts[(n + 1) % 2], n) for n in range(5, 41, 5)]
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda post: post[0].post_customer(n=post[1]), posts))
            assert {status for status, _ in answers} == {200}
            emails = sorted({email for _, email in answers})
            wait_until(lambda: len(klaviyo.profiles) == 40 and settled(hub)["deliveries"] == [("sent", 40)], 60,
                       "40 profiles at Klaviyo, their deliveries recorded as sent")
            assert all(host.applied(email) for host in hosts for email in (emails[0], emails[-1]))
        finally:
            for host in hosts:
                host.stop()
            redis.stop()
    state = settled(hub)
    assert state["inbox"] == [("processed", 40)] and state["people"] == 40
    assert state["deliveries"] == [("sent", 40)]
    assert sorted(p["email"] for p in klaviyo.profiles.values()) == emails
    assert set(klaviyo.profile_writes.values()) == {1}, "a profile was sent to Klaviyo more than once"


def settled(hub) -> dict:
    """Inbox rows and Klaviyo profile deliveries by status, and the subscribers, in the database."""
    with hub.storage.engine.connect() as conn:
        return {"inbox": conn.execute(text("SELECT status, count(*) FROM inbox_event GROUP BY status")).all(),
                "people": conn.execute(text("SELECT count(*) FROM subscriber")).scalar(),
                "deliveries": conn.execute(text("SELECT status, count(*) FROM delivery WHERE connector = 'klaviyo' "
                                                "AND kind = 'profile' GROUP BY status")).all()}
