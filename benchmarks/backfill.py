"""Backfill benchmark: 100,000 Stripe customers with a subscription each, from the loopback
stand-in enforcing Stripe's live-mode read limit (100 requests/s, 429 above it), through
`hub backfill --source stripe`, killed (SIGKILL) half-way and run again to the end.

    python benchmarks/backfill.py [--customers 100000] [--rate 100]

Prints a table and writes its section of benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import sqlite_connect, start_redis, write_section  # noqa: E402
from hub.db.engine import Storage  # noqa: E402
from standins.stripe import FakeStripe, Generated  # noqa: E402
from tests.samples import load_sample, stripe_resource  # noqa: E402

KEY = "sk_live_benchmark"  # a live key: Stripe's live limit (100 read requests/s) applies


def world(fake: FakeStripe, n: int) -> None:
    """n customers and n subscriptions made on demand, newest first (ids count down)."""
    customer = stripe_resource("customer")
    sub = load_sample("shared:stripe/pay/subscription.created.json")["object"]

    def make_customer(i: int) -> dict:
        k = n - 1 - i
        return {**customer, "id": f"cus_{i:08d}", "email": f"buyer{k}@example.com", "name": f"Buyer {k}",
                "created": 1_700_000_000 + k}

    def make_subscription(i: int) -> dict:
        k = n - 1 - i
        return {**copy.deepcopy(sub), "id": f"sub_{i:08d}", "customer": f"cus_{i:08d}",
                "created": 1_700_000_000 + k}

    fake.customers = Generated(n, make_customer, "cus_")
    fake.subscriptions = Generated(n, make_subscription, "sub_")


def checkpoint(db: Path) -> dict:
    try:
        with sqlite_connect(db, timeout=1) as conn:
            row = conn.execute("SELECT value FROM checkpoint WHERE name = 'backfill:stripe'").fetchone()
    except sqlite3.Error:
        return {}
    return json.loads(row[0]) if row else {}


def scalar(db: Path, sql: str) -> int:
    with sqlite_connect(db) as conn:
        return conn.execute(sql).fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=100, help="stand-in's requests per second")
    args = parser.parse_args()
    n = args.customers
    tmp = Path(tempfile.mkdtemp(prefix="hub-backfill-bench-"))
    db = tmp / "hub.db"
    Storage(f"sqlite:///{db}").upgrade()
    redis_proc, redis_url = start_redis(tmp)
    with FakeStripe(key=KEY, rate_per_second=args.rate) as fake:
        world(fake, n)
        env = {**os.environ, "DATABASE_URL": f"sqlite:///{db}", "REDIS_URL": redis_url,
               "STRIPE_API_KEY": KEY, "STRIPE_API_BASE": fake.url, "PYTHONPATH": str(ROOT),
               "HUB_LOG_LEVEL": "WARNING"}
        command = [sys.executable, "-m", "hub.cli", "backfill", "--source", "stripe"]
        log = open(tmp / "backfill.log", "w")
        try:
            # First run: killed once half the customers are stored.
            started = time.monotonic()
            first = subprocess.Popen(command, env=env, cwd=tmp, stdout=log, stderr=log)
            while first.poll() is None and checkpoint(db).get("counts", {}).get("customers", 0) < n // 2:
                time.sleep(0.2)
            first.send_signal(signal.SIGKILL)
            first.wait()
            first_seconds = time.monotonic() - started
            at_kill = checkpoint(db)
            stored_at_kill = scalar(db, "SELECT count(*) FROM inbox_event")
            # Second run: resumes from the checkpoint and goes to the end.
            started = time.monotonic()
            second = subprocess.run(command, env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=log, text=True)
            second_seconds = time.monotonic() - started
        finally:
            log.close()
            redis_proc.terminate()
        throttled, requests = fake.throttled, len(fake.calls)
    final = checkpoint(db)
    subscribers = scalar(db, "SELECT count(*) FROM subscriber")
    subscriptions = scalar(db, "SELECT count(*) FROM subscription")
    rows = scalar(db, "SELECT count(*) FROM inbox_event")
    distinct = scalar(db, "SELECT count(DISTINCT subscriber_id) FROM subscription")
    statuses = dict(sqlite_connect(db).execute("SELECT status, count(*) FROM inbox_event GROUP BY status").fetchall())
    objects = 2 * n
    total_seconds = first_seconds + second_seconds
    resumed_ok = (second.returncode == 0 and final.get("finished") and "resumed" in second.stdout
                  and subscribers == n and subscriptions == n and rows == objects and distinct == n)
    table = "\n".join([
        "| run | objects listed | pages | time | objects/s |",
        "|---|---|---|---|---|",
        f"| first (SIGKILL at half the customers) | {sum(at_kill.get('counts', {}).values()):,} | "
        f"{at_kill.get('pages', 0):,} | {first_seconds:.1f} s | "
        f"{sum(at_kill.get('counts', {}).values()) / first_seconds:,.0f} |",
        f"| second (`hub backfill` again: resumed) | {objects - sum(at_kill.get('counts', {}).values()):,} | "
        f"{final.get('pages', 0) - at_kill.get('pages', 0):,} | {second_seconds:.1f} s | "
        f"{(objects - sum(at_kill.get('counts', {}).values())) / second_seconds:,.0f} |",
        f"| **total** | **{objects:,}** | **{final.get('pages', 0):,}** | **{total_seconds:.1f} s** | "
        f"**{objects / total_seconds:,.0f}** |",
    ])
    summary = (f"Resumed ok: **{'yes' if resumed_ok else 'NO'}**. Final subscribers: **{subscribers:,}** "
               f"(subscriptions {subscriptions:,}, on {distinct:,} distinct subscribers); inbox rows {rows:,} "
               f"for {objects:,} objects listed (statuses {statuses}); {stored_at_kill:,} rows were stored "
               f"when the first run was killed.")
    notes = (f"{summary}\n\n{n:,} Stripe customers and {n:,} subscriptions (Stripe's example customer and "
             "subscription objects with their own ids), listed 100 a page (`starting_after`; subscriptions with "
             "`expand[]=data.customer`) from the loopback stand-in (standins/stripe.py) enforcing "
             f"{args.rate} API requests per second (Stripe's live-mode limit) with 429 above it: "
             f"{requests:,} requests, {throttled:,} answered 429. Each page is stored in the inbox with its "
             "checkpoint in one transaction and drained in the same process (normalize → apply → rules as "
             "history → profile planning; no connector configured), while the next page is fetched. The first "
             "`hub backfill` is killed with SIGKILL once the checkpoint passes half the customers; the second "
             "continues from the checkpoint. SQLite (WAL), one process. Timing includes the drain, which is what "
             "bounds the rate here, not Stripe's limit (100 requests/s × 100 objects = 10,000 objects/s).")
    print(table)
    print()
    print(summary)
    write_section("Backfill", f"python benchmarks/backfill.py --customers {n}", table, notes)


if __name__ == "__main__":
    main()
