"""Time-rule sweep: 1,000,000 subscriptions; time and peak memory to find one day's due
triggers and store them. Target: ≤ 10 s and ≤ 250 MB, on SQLite and on PostgreSQL.

    python benchmarks/sweep.py                    # SQLite (and PostgreSQL when BENCH_POSTGRES_URL is set)
    python benchmarks/sweep.py --n 100000 --no-write

The base is loaded with executemany (SQLite) or COPY (PostgreSQL). Each measurement runs
in a fresh interpreter so ru_maxrss is the sweep's own peak: first a tracemalloc run whose
transaction is rolled back, then the timed run (committed), then the same day again (it
must store nothing). The day is 2026-11-01, on which card-expiry warnings also fall due.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DAY = datetime(2026, 11, 1, 6, 0, tzinfo=timezone.utc)
CHUNK = 50_000
INTERVALS = [("month", 30), ("year", 365), ("week", 7)]


# --- data -----------------------------------------------------------------------------


def generate(n: int, seed: int = 42):
    """Yield (table, row dict) for n subscribers with one subscription and one payment each."""
    rng = random.Random(seed)
    start = DAY - timedelta(days=3 * 365)
    url = "https://billing.example/p/session"
    for i in range(1, n + 1):
        r = rng.random()
        status = ("active" if r < .75 else "trialing" if r < .79 else "past_due" if r < .80
                  else "paused" if r < .82 else "canceled")
        interval, days = INTERVALS[0 if rng.random() < .8 else 1 if rng.random() < .75 else 2]
        started = start + timedelta(seconds=rng.uniform(0, 3 * 365 * 86400))
        renewal = trial_end = canceled = None
        if status == "trialing":
            started = DAY - timedelta(seconds=rng.uniform(0, 14 * 86400))
            trial_end = renewal = started + timedelta(days=14)
        elif status == "canceled":
            canceled = DAY - timedelta(seconds=rng.uniform(0, 2 * 365 * 86400))
            started = min(started, canceled - timedelta(days=1))
        else:
            renewal = DAY + timedelta(seconds=rng.uniform(0, days * 86400))
        period_start = (renewal - timedelta(days=days)) if renewal else None
        last = period_start or (canceled - timedelta(days=rng.uniform(0, 30)))
        orders = rng.randint(0, 24)
        cards = {}
        if rng.random() < .4:
            month = rng.randint(0, 47)
            cards[f"stripe:pm_{i}"] = {"brand": "visa", "last4": f"{i % 10000:04d}",
                                      "exp_month": (10 + month) % 12 + 1, "exp_year": 2026 + (10 + month) // 12,
                                      "auto_updated": False, "updated_at": "2026-01-01T00:00:00+00:00"}
        yield "subscriber", dict(
            id=i, email=f"user{i}@example.com", stripe_customer_id=f"cus_{i}",
            first_seen_at=started - timedelta(days=rng.uniform(0, 30)), first_order_at=started if orders else None,
            last_order_at=last if orders else None, last_activity_at=last, orders_count=orders,
            lifetime_spend=orders * 2500, currency="USD", loyalty_points=orders * 25, tier="Bronze",
            stage="churned" if status == "canceled" else "engaged", stage_reason="seeded",
            health_score=10 if status == "canceled" else 60, cards=json.dumps(cards), usage="[]",
            consent="{}", created_at=DAY, updated_at=DAY)
        yield "subscription", dict(
            id=i, subscriber_id=i, source="stripe", source_id=f"sub_{i}", status=status, plan="Coffee",
            plan_id=f"price_{interval}", interval=interval, interval_count=1, amount=2500, currency="USD",
            quantity=1, current_period_start=period_start, current_period_end=renewal,
            next_renewal_at=renewal, trial_end=trial_end, cancel_at_period_end=rng.random() < .01,
            canceled_at=canceled, started_at=started, product_ids=json.dumps([f"p{i % 500}"]),
            update_payment_url=url, created_at=DAY)
        r = rng.random()
        failed = status in ("active", "past_due") and r < .03
        first_failed = DAY - timedelta(seconds=rng.uniform(0, 25 * 86400)) if failed else None
        yield "payment", dict(
            id=i, subscriber_id=i, subscription_id=i, source="stripe", source_id=f"in_{i}",
            status=("action_required" if r < .005 else "failed") if failed else "succeeded",
            amount=2500, currency="USD", attempt_count=1 if failed else 0, hard_decline=r < .002,
            first_failed_at=first_failed, paid_at=None if failed else last, update_payment_url=url,
            created_at=DAY)
        # Realistic trigger history: about one past reminder per subscriber, and the
        # welcome step 1 of everyone who started in the last week.
        yield "trigger", dict(
            subscriber_id=i, rule="renewal-7d", occasion=f"history/{i}", name="Renewal Reminder",
            properties="{}", reason="seeded", due_at=DAY - timedelta(seconds=rng.uniform(0, 60 * 86400)),
            status="fired", created_at=DAY)
        if started > DAY - timedelta(days=7):
            yield "trigger", dict(
                subscriber_id=i, rule="welcome-0d", occasion="first-subscription", name="Welcome Step",
                properties="{}", reason="seeded", due_at=started, status="fired", created_at=DAY)


def _sqlite_value(v):
    if isinstance(v, datetime):
        return v.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    return int(v) if isinstance(v, bool) else v


def load(url: str, n: int, with_indexes: bool) -> dict:
    """Fresh schema and n subscriptions, inserted in bulk; returns seconds taken."""
    from hub.db.engine import Storage
    from hub.models import Base

    storage = Storage(url)
    is_sqlite = storage.engine.dialect.name == "sqlite"
    Base.metadata.drop_all(storage.engine)
    Base.metadata.create_all(storage.engine)
    # The models' secondary indexes are built after the bulk insert (as a restore would):
    # ~5x faster to load; the sweep then reads compact indexes, like a long-lived database's.
    later = [ix for table in Base.metadata.sorted_tables for ix in table.indexes
             if table.name in ("subscriber", "subscription", "payment")]
    for index in later:
        index.drop(storage.engine)
    t0 = time.perf_counter()
    buffers: dict[str, list[dict]] = {}
    raw = storage.engine.raw_connection()
    try:
        for table, row in generate(n):
            buf = buffers.setdefault(table, [])
            buf.append(row)
            if len(buf) >= CHUNK:
                _flush(raw, is_sqlite, table, buf)
        for table, buf in buffers.items():
            _flush(raw, is_sqlite, table, buf)
        raw.commit()
    finally:
        raw.close()
    for index in later:
        index.create(storage.engine)
    with storage.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    if not is_sqlite:
        with storage.engine.begin() as conn:  # ids were given explicitly: move the sequences on
            for table in ("subscriber", "subscription", "payment"):
                conn.exec_driver_sql(f"SELECT setval('{table}_id_seq', (SELECT max(id) FROM {table}))")
    storage.dispose()
    return {"load_s": time.perf_counter() - t0}


def _flush(raw, is_sqlite: bool, table: str, rows: list[dict]) -> None:
    if not rows:
        return
    cols = list(rows[0])
    cur = raw.cursor()
    if is_sqlite:
        marks = ", ".join("?" * len(cols))
        cur.executemany(f'INSERT INTO "{table}" ({", ".join(cols)}) VALUES ({marks})',
                        [[_sqlite_value(r[c]) for c in cols] for r in rows])
    else:
        with cur.copy(f'COPY "{table}" ({", ".join(cols)}) FROM STDIN') as copy:
            for r in rows:
                copy.write_row([r[c] for c in cols])
    cur.close()
    rows.clear()


# --- measurement ----------------------------------------------------------------------


def measure(url: str, trace: bool, commit: bool, queue) -> None:
    """One sweep of DAY in this (fresh) process: seconds, counts, peak memory."""
    import resource
    import tracemalloc

    from hub.db.engine import Storage
    from hub.sync import rules
    from hub.sync.rules import params as params_

    p = params_.load()
    storage = Storage(url)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    with storage.sessions() as session:
        report = rules.run_sweep(session, DAY, p)
        session.commit() if commit else session.rollback()
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] if trace else None
    queue.put({"seconds": elapsed, "counts": report.counts, "traced_peak_mb": peak and peak / 2 ** 20,
               "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "import_rss_mb": base_rss / 1024})
    storage.dispose()


def run_child(target, *args):
    """target(*args, queue) in a fresh interpreter; its result, or its error raised here."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_guarded, args=(target, args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    if "error" in result:
        raise RuntimeError(f"{target.__name__} failed in its process:\n{result['error']}")
    return result


def _guarded(target, args, queue):
    import traceback

    try:
        target(*args, queue)
    except BaseException:
        queue.put({"error": traceback.format_exc()})


def _load_child(url, n, with_indexes, queue):
    queue.put(load(url, n, with_indexes))


def bench(url: str, n: int, with_indexes: bool) -> dict:
    loaded = run_child(_load_child, url, n, with_indexes)
    traced = run_child(measure, url, True, False)
    timed = run_child(measure, url, False, True)
    again = run_child(measure, url, False, True)
    return {"load": loaded, "traced": traced, "timed": timed, "again": again}


def server_info(url: str) -> str:
    """What a reader needs to compare a PostgreSQL run: version and main memory settings."""
    if url.startswith("sqlite"):
        return ""
    from hub.db.engine import Storage

    storage = Storage(url)
    try:
        with storage.engine.connect() as conn:
            version = conn.exec_driver_sql("SHOW server_version").scalar()
            buffers = conn.exec_driver_sql("SHOW shared_buffers").scalar()
    finally:
        storage.dispose()
    return f"PostgreSQL {version} on the same machine (shared_buffers {buffers})."


def row(name: str, r: dict) -> str:
    counts = r["timed"]["counts"]
    stored = sum(counts.values())
    detail = ", ".join(f"{k} {v:,}" for k, v in counts.items() if v)
    return (f"| {name} | {r['timed']['seconds']:.2f} s | {r['timed']['maxrss_mb']:.0f} MB "
            f"({r['traced']['traced_peak_mb']:.0f} MB traced) | {stored:,} ({detail}) | "
            f"{r['again']['seconds']:.2f} s, {sum(r['again']['counts'].values())} new | {r['load']['load_s']:.0f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="subscriptions (one subscriber each)")
    parser.add_argument("--no-write", action="store_true", help="print, leave RESULTS.md alone")
    args = parser.parse_args()
    with_indexes = True  # the sweep's indexes are declared on the models (hub/models/subscriber.py)
    targets = []
    tmp = tempfile.mkdtemp(prefix="hub-sweep-")
    targets.append(("SQLite (WAL)", "sqlite:///" + os.path.join(tmp, "sweep.db")))
    if os.environ.get("BENCH_POSTGRES_URL"):
        targets.append(("PostgreSQL", os.environ["BENCH_POSTGRES_URL"]))
    lines, servers = [], []
    for name, url in targets:
        result = bench(url, args.n, with_indexes)
        servers.append(server_info(url))
        print(name, json.dumps(result, indent=1), flush=True)
        lines.append(row(name, result))
    table = "\n".join(["| database | sweep time | peak memory (RSS; Python heap) | triggers stored "
                       "| same day again | load |",
                       "|---|---|---|---|---|---|", *lines])
    print(table)
    if not args.no_write:
        from benchmarks.common import write_section

        command = "python benchmarks/sweep.py"
        if len(targets) > 1:
            command = "BENCH_POSTGRES_URL=postgresql+psycopg://… " + command
        notes = (f"{args.n:,} subscribers with one subscription and one payment each (75 % active, 4 % trialing, "
                 "18 % canceled; monthly 80 %, yearly 15 %, weekly 5 %), 40 % with a card on file, "
                 f"{args.n:,} past triggers. Day swept: 2026-11-01 (renewal, trial, dunning, card expiry, "
                 "welcome, win back and stage recompute all have work). Each run in a fresh process; peak "
                 "memory is the process's ru_maxrss including the interpreter and SQLAlchemy, plus the "
                 "Python heap peak from tracemalloc (a separate, rolled-back run). "
                 + "With the indexes the models declare (migration 0001): ix_subscription_renewal, "
                   "ix_subscription_trial, ix_subscription_ended, ix_subscription_started, ix_payment_open, "
                   "ix_subscriber_last_activity, ix_subscriber_first_order, ix_subscriber_first_seen.")
        notes += f" Load average of the shared machine at the end of the run: {os.getloadavg()[0]:.1f}."
        notes += " " + " ".join(x for x in servers if x) + (
            " Times vary by about ±15 % between runs on this shared machine.")
        # Distinct first words: write_section replaces every section whose title starts alike.
        title = "Time-rule sweep" if with_indexes else "Sweep with only the indexes of today's models"
        write_section(title, command, table, notes)


if __name__ == "__main__":
    main()
