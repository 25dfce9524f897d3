"""`hub demo`: a running hub fed by the simulated store, against stand-ins of the tools.

The hub runs as `hub run` runs it (web server and worker processes, a SQLite file and an
embedded Redis in the demo's folder). This process plays everyone else: the loopback
stand-ins of Klaviyo, HubSpot, ActiveCampaign and Shopify's Admin API (in threads, some
of their answers 429s and 5xx on purpose), the store's platforms posting signed webhooks
and usage reports, and the scheduler running the time rules at the end of each
simulated day (`hub sweep --at`). A day's sweep waits until that day's webhooks are
processed, so reminders are decided on the state the day left behind.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from fnmatch import fnmatch
from pathlib import Path

import click
import requests
import yaml
from sqlalchemy import func, select

from hub import make_hub
from hub.config import Settings
from hub.jobs import request_pushes, run_time_rules
from hub.models import (
    DEAD,
    FAILED,
    PENDING,
    QUEUED,
    RETRYING,
    SENT,
    Delivery,
    DeliveryAttempt,
    InboxEvent,
    StaffUser,
    Subscriber,
)
from hub.ops import dashboard
from hub.queues import embedded_redis_path, start_embedded_redis
from hub.supervise import port_free
from hub.web.synclog import tool_name

try:  # an optional part: the stand-ins and what they need come with the [demo] extra
    from standins import store
    from standins.activecampaign import FakeActiveCampaign
    from standins.hubspot import FakeHubSpot
    from standins.klaviyo import FakeKlaviyo
    from standins.payloads import PLATFORMS
    from standins.shopify import FakeShopifyAdmin
except ModuleNotFoundError as exc:
    MISSING: str | None = exc.name
else:
    MISSING = None

STAFF_EMAIL = "demo@example.com"
SWEEP_TIME = timedelta(hours=23, minutes=30)  # each simulated day's sweep runs at 23:30 UTC
DRAIN_TIMEOUT = 600.0
POSTERS = 4  # connections posting at once (the web server runs 2 processes)
# A bad quarter of an hour halfway through, so the sync log's replay, retry and resend have
# real failures to work on: the roastery's stock changes while Shopify's Admin API fails the
# hub's inventory-item lookups with an internal error (those webhooks fail) and ActiveCampaign
# refuses the API key (those deliveries give up).
INCIDENT_EVENTS = 3  # products whose stock change reaches the hub during Shopify's incident
INCIDENT_DELIVERIES = 3  # ActiveCampaign contact syncs answered 403
# ActiveCampaign's answer to a key it does not accept (standins/activecampaign.py).
REFUSED_KEY = "You are not authorized to access this resource"
# A folder holding this file was made by the demo: only such a folder is emptied at a start.
MARKER = ".hub-demo"
# What the demo writes in its folder: the database, the embedded Redis, the log, the field maps.
OWN_FILES = ("hub.db", "hub.db-*", "hub-inbox.db", "hub-inbox.db-*", "hub-redis.*",
             "hub-*.lock", "hub.log", "mappings", MARKER)
# What the demo's ActiveCampaign is tagged for (see Demo._mappings).
AC_TRIGGERS = ("Subscription Started", "Stage Changed", "Tier Changed", "Payment Failed",
               "Payment Recovered", "Subscription Cancelled", "Win Back")


class DemoError(Exception):
    """The demo cannot go on; the message says why."""


@dataclass
class Options:
    folder: Path
    subscribers: int = 300
    months: int = 6
    seed: int = 1
    host: str = "127.0.0.1"
    port: int = 8000
    web_workers: int = 2


@dataclass
class Progress:
    """Counts shown while the demo runs and in its summary."""

    webhooks: int = 0
    usage: int = 0
    sweeps: int = 0
    triggers: int = 0
    kinds: Counter = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    def rate(self) -> float:
        return (self.webhooks + self.usage) / max(1e-6, time.monotonic() - self.started)


def _secrets() -> dict:
    token = secrets.token_hex
    return {"SHOPIFY_WEBHOOK_SECRET": f"shpss_{token(16)}", "SHOPIFY_ACCESS_TOKEN": f"shpat_{token(16)}",
            "RECHARGE_WEBHOOK_SECRET": token(16), "STRIPE_WEBHOOK_SECRET": f"whsec_{token(16)}",
            "KLAVIYO_API_KEY": f"pk_{token(16)}",
            "HUBSPOT_ACCESS_TOKEN": f"pat-demo-{token(16)}", "ACTIVECAMPAIGN_API_KEY": token(20),
            "HUB_API_TOKEN": token(16), "HUB_SECRET_KEY": token(32)}


def claim_folder(folder: Path) -> None:
    """Make `folder` the demo's, or refuse without touching it.

    The demo empties its folder at each start, so it takes only a new or empty folder, or
    one it made itself holding nothing but its own files (`--folder .` in a project must
    never delete that project's mappings/).
    """
    if folder.exists() and not folder.is_dir():
        raise DemoError(f"{folder} is a file, not a folder: pick a folder with --folder")
    names = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    foreign = [n for n in names if not any(fnmatch(n, own) for own in OWN_FILES)]
    if names and (MARKER not in names or foreign):
        shown = ", ".join((foreign or names)[:3]) + ("…" if len(foreign or names) > 3 else "")
        raise DemoError(f"{folder} holds files the demo did not make ({shown}); the demo empties its "
                        "folder at each start, so it uses only a new or empty folder or one it made: "
                        "pick another with --folder")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("Made by `hub demo`, which empties this folder at each start.\n")


class Demo:
    """One demo run: start everything, simulate, report, serve until stopped."""

    def __init__(self, options: Options, echo=click.echo):
        if MISSING:
            raise DemoError(f"`hub demo` runs against the stand-ins, which are not installed (no module "
                            f"{MISSING!r}): pip install 'subscription-hub[demo]', or '.[demo]' in a checkout")
        self.o = options
        self.echo = echo
        self.folder = options.folder.resolve()
        self.url = f"http://{options.host}:{options.port}"
        self.secrets = _secrets()
        self.password = secrets.token_urlsafe(12)
        self.progress = Progress()
        self.children: list[subprocess.Popen] = []
        self.standins: dict = {}
        self.embedded = None
        self.hub = None
        self.http = requests.Session()
        self.usage_on = True
        self.struck = 0  # webhooks posted during the incident
        self.builders: dict = {}
        self.pool = ThreadPoolExecutor(POSTERS, thread_name_prefix="demo-poster")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sessions: list[requests.Session] = []
        self.tty = sys.stdout.isatty()

    # Setting up ------------------------------------------------------------------------

    def start(self) -> None:
        """Fresh folder, stand-ins, database, staff login, web and worker processes."""
        if not port_free(self.o.host, self.o.port):
            raise DemoError(f"port {self.o.port} is in use; pick another with --port")
        claim_folder(self.folder)
        for old in [*self.folder.glob("hub.db*"), *self.folder.glob("hub-inbox.db*"),
                    *self.folder.glob("hub-redis.db*")]:
            old.unlink()  # a demo always starts from an empty store
        self._start_standins()
        env = self._environment()
        self.hub = make_hub(settings=Settings.from_env(env=env))
        self.hub.storage.upgrade()
        self._add_staff()
        self.log = open(self.folder / "hub.log", "ab")  # noqa: SIM115 - the children write it until stop()
        command = [sys.executable, "-m", "hub.cli"]
        self.children.append(subprocess.Popen(
            [*command, "serve", "--host", self.o.host, "--port", str(self.o.port),
             "--workers", str(self.o.web_workers), "--no-upgrade"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT))
        # `hub worker` (every queue, and cron), and a second worker for the inbox only: a
        # push waiting for a fuller batch or a rate limit must not hold up a day's drain.
        # One process pushes, as one would per tool account.
        for argv in ([*command, "worker"], [sys.executable, "-m", "hub.demo.worker"]):
            self.children.append(subprocess.Popen(argv, env=env, stdout=self.log,
                                                  stderr=subprocess.STDOUT))
        self._wait_for_web()

    def _start_standins(self) -> None:
        s = self.secrets
        klaviyo = FakeKlaviyo(api_key=s["KLAVIYO_API_KEY"]).start()
        hubspot = FakeHubSpot(token=s["HUBSPOT_ACCESS_TOKEN"]).start()
        # Its limit is raised with the demo's own field map (_mappings below): it holds none.
        activecampaign = FakeActiveCampaign(api_key=s["ACTIVECAMPAIGN_API_KEY"], rate_limited=False).start()
        admin = FakeShopifyAdmin(token=s["SHOPIFY_ACCESS_TOKEN"]).__enter__()
        # The tools misbehave as they do in production: throttling all along (Retry-After
        # honoured), and a few server errors early on, which the hub retries with backoff.
        few = self.o.subscribers // 100
        klaviyo.fail(429, retry_after=2, times=1)  # the very first call, so even a small demo shows one
        klaviyo.fail(429, retry_after=2, fraction=1 / 6)
        klaviyo.fail(503, fraction=1 / 50, times=few)
        hubspot.fail(429, retry_after=1, fraction=1 / 15)
        hubspot.fail(502, fraction=1 / 40, times=few)
        # Contact syncs only: a 429 between creating a custom field and linking it leaves
        # the ActiveCampaign connector asking to create the field again (a 422).
        # A 429 pauses every push to that account for its Retry-After: a handful only.
        activecampaign.fail(429, retry_after=1, fraction=1 / 50, times=max(1, few * 2), path="/contact/sync")
        activecampaign.fail(503, fraction=1 / 60, times=few)
        self.standins = {"Klaviyo": klaviyo, "HubSpot": hubspot, "ActiveCampaign": activecampaign,
                         "Shopify Admin API": admin}

    def _environment(self) -> dict:
        s, tools = self.secrets, self.standins
        database = f"sqlite:///{self.folder / 'hub.db'}"
        self.embedded = start_embedded_redis(embedded_redis_path(database))
        env = dict(os.environ)
        env.update(s)
        env.update({
            "DATABASE_URL": database, "REDIS_URL": f"unix://{self.embedded.socket_file}",
            "SHOPIFY_SHOP": "demo-roastery.myshopify.com", "SHOPIFY_ADMIN_URL": tools["Shopify Admin API"].url,
            "SHOPIFY_API_VERSION": "2026-10", "SHOPIFY_CLIENT_SECRET": "", "STRIPE_API_KEY": "",
            "RECHARGE_API_KEY": "",
            "KLAVIYO_BASE_URL": tools["Klaviyo"].url, "HUBSPOT_BASE_URL": tools["HubSpot"].url,
            "ACTIVECAMPAIGN_URL": tools["ActiveCampaign"].url, "OUTBOUND_WEBHOOK_URL": "",
            "CHARGEBEE_WEBHOOK_USER": "", "CHARGEBEE_WEBHOOK_PASSWORD": "",
            "HUB_BASE_URL": self.url, "HUB_MAPPINGS_DIR": str(self._mappings()),
            "HUB_LOG_LEVEL": os.environ.get("HUB_LOG_LEVEL", "WARNING"),
        })
        return env

    def _mappings(self) -> Path:
        """The demo's own copy of the field maps (mappings/ of the project), two keys changed.

        ActiveCampaign allows 5 requests per second per account, and each delivery takes a
        few (contact sync, tag look-up, tag): six months of a few hundred subscribers would
        keep the stand-in busy for an hour. The stand-in is local, so the copy allows
        200/s, and tags contacts for lifecycle moments only (not each of the ~2,400 renewal
        reminders, which Klaviyo gets in bulk). Every other number is the project's own.
        """

        source = Path(os.environ.get("HUB_MAPPINGS_DIR") or Settings.HUB_MAPPINGS_DIR)
        target = self.folder / "mappings"
        shutil.rmtree(target, ignore_errors=True)
        if source.is_dir():
            shutil.copytree(source, target)
        target.mkdir(exist_ok=True)
        path = target / "activecampaign.yaml"
        mapping = (yaml.safe_load(path.read_text()) if path.exists() else None) or {}
        mapping["rate_limits"] = {**(mapping.get("rate_limits") or {}), "api": "200/s"}
        if mapping.get("triggers", "all") == "all":
            mapping["triggers"] = list(AC_TRIGGERS)
        path.write_text("# hub demo: the project's mapping, with the stand-in's rate limit raised\n"
                        + yaml.safe_dump(mapping, sort_keys=False))
        return target

    def _add_staff(self) -> None:
        with self.hub.storage.session() as session:
            user = StaffUser(email=STAFF_EMAIL, role="operator")
            user.set_password(self.password)
            session.add(user)

    def _wait_for_web(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_children()
            try:
                if self.http.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise DemoError(f"the web server did not answer at {self.url} within {timeout:.0f} s "
                        f"(see {self.folder / 'hub.log'})")

    def _check_children(self) -> None:
        for child in self.children:
            if child.poll() is not None:
                raise DemoError(f"a hub process exited with status {child.returncode} "
                                f"(see {self.folder / 'hub.log'})")

    # The simulated months ---------------------------------------------------------------

    def simulate(self) -> None:
        """Post every day's webhooks and usage, drain, sweep; day after day."""
        builders = self.builders = {name: cls(self.secrets[f"{name.upper()}_WEBHOOK_SECRET"])
                                    for name, cls in PLATFORMS.items()}
        days = self.o.months * 30
        start = store.day_start(datetime.now(timezone.utc)) - timedelta(days=days)
        trials = frozenset(name for name, b in builders.items() if b.trials)
        happenings = store.simulate(self.o.subscribers, start, days, tuple(builders), seed=self.o.seed,
                                    trial_platforms=trials)
        day, today = 0, {}
        for h in happenings:
            while h.at >= start + timedelta(days=day + 1):
                self._post_day(today, start + timedelta(days=day), incident=day >= days // 2)
                self._end_of_day(start, day, days)
                day, today = day + 1, {}
            self.progress.kinds[h.kind] += 1
            # Built here, in order (the builders count ids);
            # posted at the day's end, one thread per customer.
            todo = today.setdefault(h.customer.number, [])
            if h.kind == store.USAGE:
                todo.append(("usage", {"subscriber": h.customer.email, "quantity": h.detail["quantity"],
                                       "at": h.at.isoformat(), "metric": h.detail["metric"]}))
            else:
                todo += [("webhook", w) for w in builders[h.customer.platform].webhooks(h)]
        self._post_day(today, start + timedelta(days=day), incident=True)
        while day < days:
            self._end_of_day(start, day, days)
            day += 1
        if self.tty:
            self.echo("")

    def _post_day(self, today: dict, day: datetime, incident: bool = False) -> None:
        """Post a day's webhooks and usage reports: each customer's in order, customers at
        once (as platforms deliver), on POSTERS connections. With `incident`, the first such
        day starts with the incident."""
        if incident and not self.struck:
            self._incident(day)
        list(self.pool.map(self._post_items, today.values()))  # re-raises a poster's DemoError

    def _post_items(self, items) -> None:
        for kind, item in items:
            self._post_webhook(item) if kind == "webhook" else self._post_usage(item)

    def _incident(self, day: datetime) -> None:
        """The stock of a few products changes while Shopify's Admin API refuses the hub's access
        token (the hub cannot look up which product an inventory item is: those webhooks fail
        until replayed); then ActiveCampaign refuses the key for a few contact syncs (those
        deliveries give up until retried)."""
        admin, shopify = self.standins["Shopify Admin API"], self.builders["shopify"]
        plans = store.PLANS[:INCIDENT_EVENTS]
        for plan in plans:  # what the Admin API answers once it answers again (a replay)
            product, variant, _ = shopify.product(plan)
            admin.inventory_items[f"gid://shopify/InventoryItem/{shopify.inventory_item(plan)}"] = {
                "id": f"gid://shopify/InventoryItem/{shopify.inventory_item(plan)}",
                "variant": {"id": f"gid://shopify/ProductVariant/{variant}",
                            "product": {"id": f"gid://shopify/Product/{product}"}}}
        stock = [("webhook", shopify.inventory(plan, 0, day + timedelta(hours=9))) for plan in plans]
        # Refused (401), not left unanswered: a lookup Shopify does not answer would wait and
        # be tried again by the hub itself (hub.sync.inbox), leaving nothing to replay.
        token, admin.token = admin.token, f"{admin.token}-rotated"
        try:
            self._post_items(stock)
            self._wait_inbox()
        finally:
            admin.token = token
        self.standins["ActiveCampaign"].fail(403, times=INCIDENT_DELIVERIES, path="/contact/sync",
                                             message=REFUSED_KEY)
        self.struck = len(stock)

    def _session(self) -> requests.Session:
        http = getattr(self._local, "http", None)
        if http is None:
            http = self._local.http = requests.Session()
            with self._lock:
                self._sessions.append(http)
        return http

    def _post_webhook(self, webhook) -> None:
        answer = self._session().post(f"{self.url}/webhooks/{webhook.source}", data=webhook.body,
                                      headers=webhook.headers, timeout=30)
        if answer.status_code != 200:
            raise DemoError(f"the hub answered {answer.status_code} to a {webhook.source} "
                            f"{webhook.topic} webhook: {answer.text[:200]}")
        with self._lock:
            self.progress.webhooks += 1

    def _post_usage(self, report: dict) -> None:
        if not self.usage_on:
            return
        answer = self._session().post(f"{self.url}/api/usage", json=report, timeout=30,
                                      headers={"Authorization": f"Bearer {self.secrets['HUB_API_TOKEN']}"})
        if answer.status_code == 201:
            with self._lock:
                self.progress.usage += 1
        elif answer.status_code in (404, 405) and "subscriber" not in answer.text:
            self.usage_on = False  # this hub has no usage API: the store keeps its usage to itself
            self.echo("  (no /api/usage on this hub: usage reports skipped)")

    def _end_of_day(self, start: datetime, day: int, days: int) -> None:
        """Wait for the day's webhooks to be processed, then run the time rules as of its end."""
        self._wait_inbox()
        counts = run_time_rules(self.hub, start + timedelta(days=day) + SWEEP_TIME)
        self.progress.sweeps += 1
        self.progress.triggers += sum(counts.values())
        request_pushes(self.hub)
        shown = f"  simulated day {day + 1}/{days} · {self.progress.webhooks:,} webhooks · " \
                f"{self.progress.usage:,} usage reports · {self.progress.rate():,.0f} posts/s"
        if self.tty:
            self.echo("\r" + shown, nl=False)
        elif (day + 1) % 30 == 0 or day + 1 == days:
            self.echo(shown)

    def _open_inbox(self) -> int:
        with self.hub.storage.session() as session:
            return session.scalar(select(func.count()).select_from(InboxEvent)
                                  .where(InboxEvent.status == PENDING))

    def _open_deliveries(self) -> int:
        with self.hub.storage.session() as session:
            return session.scalar(select(func.count()).select_from(Delivery)
                                  .where(Delivery.status.in_((QUEUED, RETRYING))))

    def _wait_inbox(self, timeout: float = DRAIN_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while self._open_inbox():
            self._check_children()
            if time.monotonic() > deadline:
                raise DemoError(f"the inbox did not drain within {timeout:.0f} s "
                                f"(see {self.folder / 'hub.log'})")
            time.sleep(0.02)

    def wait_drained(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Until every webhook is processed and every delivery sent (or dead-lettered)."""
        self._wait_inbox(timeout)
        deadline = time.monotonic() + timeout
        asked = 0.0
        while self._open_deliveries():
            self._check_children()
            if time.monotonic() > deadline:
                self.echo(f"  note: {self._open_deliveries()} deliveries still waiting after {timeout:.0f} s")
                return
            if time.monotonic() - asked > 2.0:
                # Retries come due while no push job runs: ask for one, as the cron would.
                request_pushes(self.hub)
                asked = time.monotonic()
            time.sleep(0.2)

    # Reporting ---------------------------------------------------------------------------

    def example_subscriber(self) -> str | None:
        """The email of a subscriber with a Klaviyo delivery that was retried after a 429."""
        with self.hub.storage.session() as session:
            return session.scalar(
                select(Subscriber.email).join(Delivery, Delivery.subscriber_id == Subscriber.id)
                .join(DeliveryAttempt, DeliveryAttempt.delivery_id == Delivery.id)
                .where(Delivery.connector == "klaviyo", Delivery.status == SENT,
                       DeliveryAttempt.http_status == 429, Subscriber.email.is_not(None))
                # The latest such retry: near the top of their timeline (newest first).
                .order_by(DeliveryAttempt.id.desc()).limit(1))

    def failures(self) -> list[str]:
        """Where to find a failed event to replay, a dead delivery to retry and a customer to resend."""
        with self.hub.storage.session() as session:
            failed = session.scalars(select(InboxEvent).where(InboxEvent.is_open(), InboxEvent.status == FAILED)
                                     .order_by(InboxEvent.id.desc())).all()
            dead = session.execute(select(Delivery.id, Delivery.connector, Subscriber.email)
                                   .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                                   .where(Delivery.status == DEAD).order_by(Delivery.id.desc())).all()
        lines = []
        if failed:
            first_line = failed[0].error.splitlines()[0]
            lines.append(f"Replay:     {len(failed)} event{'s' if len(failed) > 1 else ''} failed "
                         f"(e.g. #{failed[0].id}: {first_line}): {self.url}/sync-log/failed-events")
        if dead:
            tool = tool_name(dead[0].connector)
            lines.append(f"Retry:      {len(dead)} deliver{'ies' if len(dead) > 1 else 'y'} gave up "
                         f"(e.g. #{dead[0].id} to {tool}): {self.url}/sync-log/deliveries?status=dead")
            if dead[0].email:
                lines.append(f"Resend:     search for {dead[0].email}, then “Send this customer to {tool} again”")
        return lines

    def summary(self) -> list[str]:
        dashboard.catch_up(self.hub.storage)  # the dashboard's MRR ledger, read up to now
        with self.hub.storage.session() as session:
            subscribers = session.scalar(select(func.count()).select_from(Subscriber))
            statuses = dict(session.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all())
        seconds = time.monotonic() - self.progress.started
        lines = [(f"Simulated {self.o.months * 30} days of a store with {subscribers} subscribers in "
                  f"{seconds:.0f} s: {self.progress.webhooks:,} signed webhooks, {self.progress.usage:,} "
                  f"usage reports, {self.progress.sweeps} daily sweeps ({self.progress.triggers:,} triggers)."),
                 "Deliveries: " + ", ".join(f"{n:,} {status}" for status, n in sorted(statuses.items()))]
        for name, tool in self.standins.items():
            if name == "Shopify Admin API":
                lines.append(f"  {name} stand-in answered {len(tool.requests):,} queries")
                continue
            answers = Counter(c.status for c in tool.calls)
            shown = ", ".join(f"{n:,}× {code}" for code, n in sorted(answers.items(), key=lambda kv: kv[0] or 0))
            lines.append(f"  {name} stand-in answered {sum(answers.values()):,} calls: {shown}")
        return lines

    # Stopping ----------------------------------------------------------------------------

    def stop(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        for tool in self.standins.values():
            tool.__exit__(None, None, None)
        if self.hub is not None:
            self.hub.storage.dispose()
        if self.embedded is not None:
            self.embedded.shutdown()
        self.pool.shutdown(wait=True)
        for http in [self.http, *self._sessions]:
            http.close()
        if getattr(self, "log", None) is not None:
            self.log.close()


def run(options: Options, echo=click.echo, keep_serving: bool = True) -> Demo:
    """The whole demo; with `keep_serving`, serve until SIGINT/SIGTERM after printing the login."""
    demo = Demo(options, echo)
    def stop(*_):
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        echo(f"Starting the hub in {demo.folder} (stand-ins of Klaviyo, HubSpot, ActiveCampaign "
             f"and Shopify's Admin API on loopback)…")
        demo.start()
        echo(f"Simulating {options.months * 30} days of a store with {options.subscribers} "
             f"subscribers (seed {options.seed})…")
        demo.simulate()
        echo("Waiting for the hub to process and deliver everything…")
        demo.wait_drained()
        for line in demo.summary():
            echo(line)
        example = demo.example_subscriber()
        echo("")
        echo(f"Sync log:   {demo.url}/sync-log/")
        echo(f"Dashboard:  {demo.url}/sync-log/dashboard")
        echo(f"Log in as   {STAFF_EMAIL}")
        echo(f"Password:   {demo.password}")
        if example:
            echo(f"Try:        search for {example} (a Klaviyo delivery retried after a 429)")
        for line in demo.failures():
            echo(line)
        if keep_serving:
            echo("The hub keeps running; Ctrl-C stops it.")
            while True:
                demo._check_children()
                time.sleep(0.5)
    except KeyboardInterrupt:
        echo("\nStopping the demo…")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        demo.stop()
    return demo
