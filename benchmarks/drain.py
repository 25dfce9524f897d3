"""The hub's three stages, one at a time, in one process: CPU per event of each, alone.

N signed Stripe `customer.created` webhooks (distinct customers) go through the web path
(WebhookApp, called as WSGI in-process: no HTTP server), then one drain of the inbox
(`drain_inbox`), then one Klaviyo push (`push_batch`, the official SDK against the loopback
stand-in, schema checks off). Each stage's CPU is the main thread's own
(`time.thread_time`): the stand-in's thread and Redis's are not counted. With nothing else
running, these are the costs the end-to-end benchmark (`e2e.py`) sums up, before the two cores
and the load generator are shared; they say which stage a change made cheaper.

Usage: python benchmarks/drain.py [--events 20000] [--runs 3] [--database-url postgresql+psycopg://…]
       [--other-tools]  (ActiveCampaign and HubSpot on: the drain marks the profiles they are owed)
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import OTHER_TOOLS, SpeedProbe, customer_created, start_redis, write_section  # noqa: E402
from benchmarks.e2e import reset_postgres  # noqa: E402
from standins.klaviyo import FakeKlaviyo  # noqa: E402

SECRET = "whsec_bench"
KLAVIYO_KEY = "pk_bench"
WARM = 500  # rows through every stage first: imports, caches and the SDK's models built


def _requests(prefix: str, n: int, now: int) -> list[tuple[bytes, str]]:
    from tests.samples import sign_stripe

    bodies = [customer_created(prefix, i, now) for i in range(n)]
    return [(body, sign_stripe(body, SECRET, now)["Stripe-Signature"]) for body in bodies]


def run_once(n: int, database_url: str | None = None, other_tools: bool = False) -> dict:
    """One fresh hub (SQLite files, or `database_url` emptied; its own Redis): the stages'
    CPU and wall µs per event. `other_tools`: ActiveCampaign and HubSpot are on (not pushed)."""
    tmp = Path(tempfile.mkdtemp(prefix="hub-drain-bench-"))
    redis_proc, redis_url = start_redis(tmp)
    klaviyo = FakeKlaviyo(api_key=KLAVIYO_KEY, validate=False).start()
    saved = dict(os.environ)
    if database_url:
        reset_postgres(database_url)
    os.environ.update(DATABASE_URL=database_url or f"sqlite:///{tmp / 'hub.db'}", REDIS_URL=redis_url,
                      STRIPE_WEBHOOK_SECRET=SECRET, KLAVIYO_API_KEY=KLAVIYO_KEY,
                      KLAVIYO_BASE_URL=klaviyo.url, HUB_LOG_LEVEL="WARNING")
    for key in OTHER_TOOLS:
        os.environ.pop(key, None)
    if other_tools:  # nothing answers there: only the drain's planning is measured for them
        os.environ.update(ACTIVECAMPAIGN_URL="http://127.0.0.1:9", ACTIVECAMPAIGN_API_KEY="ac_bench",
                          HUBSPOT_ACCESS_TOKEN="pat_bench", HUBSPOT_BASE_URL="http://127.0.0.1:9")
    try:
        from hub import create_app, make_hub
        from hub.process import tune_gc
        from hub.sync import outbox
        from hub.sync.inbox import drain_inbox
        from hub.web.webhooks import WebhookApp

        hub = make_hub()
        hub.storage.upgrade()
        app = WebhookApp(hub, create_app(hub=hub))
        tune_gc()  # as hub serve and hub worker do

        def post_all(requests) -> None:
            for body, signature in requests:
                environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/webhooks/stripe",
                           "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/json",
                           "HTTP_STRIPE_SIGNATURE": signature, "wsgi.input": io.BytesIO(body),
                           "REMOTE_ADDR": "127.0.0.1"}
                answer = b"".join(app(environ, lambda status, headers: None))
                if b'"received":true' not in answer:
                    raise RuntimeError(f"webhook refused: {answer!r}")

        def push():
            return outbox.push_batch(hub.storage, hub.settings, "klaviyo", redis=hub.queues.connection)

        now = int(time.time())
        warm, measured = _requests("warm", WARM, now), _requests("b", n, now)
        post_all(warm)
        drain_inbox(hub.storage, hub.settings)
        push()
        result = {}
        for stage, work in (("web", lambda: post_all(measured)),
                            ("drain", lambda: drain_inbox(hub.storage, hub.settings)),
                            ("push", push)):
            cpu, wall = time.thread_time(), time.perf_counter()
            done = work()
            result[stage] = ((time.thread_time() - cpu) * 1e6 / n, (time.perf_counter() - wall) * 1e6 / n)
            if stage == "drain" and done.get("processed") != n:
                raise RuntimeError(f"drain processed {done}, expected {n}")
            if stage == "push" and done.get("sent") != n:
                raise RuntimeError(f"push sent {done}, expected {n}")
        if len(klaviyo.profiles) != n + WARM:
            raise RuntimeError(f"the stand-in holds {len(klaviyo.profiles)} profiles, expected {n + WARM}")
        hub.storage.dispose()
        return result
    finally:
        os.environ.clear()
        os.environ.update(saved)
        klaviyo.stop()
        redis_proc.terminate()
        redis_proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", default=None,
                        help="a PostgreSQL database to run on (emptied first) instead of SQLite files")
    parser.add_argument("--other-tools", action="store_true",
                        help="ActiveCampaign and HubSpot on: the drain marks the profiles they are owed")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args()
    runs = []
    with SpeedProbe() as probe:
        started = time.monotonic()
        for i in range(args.runs):
            runs.append(run_once(args.events, args.database_url, args.other_tools))
            print(f"  run {i + 1}/{args.runs}: " + ", ".join(f"{stage} {cpu:.0f} µs" for stage, (cpu, _) in
                                                            runs[-1].items()), file=sys.stderr, flush=True)
        ended = time.monotonic()
    labels = {"web": "web path (verify, store, answer; WSGI in-process, no HTTP server)",
              "drain": "drain (parse, normalize, apply, rules, plan deliveries, outcomes)",
              "push": "Klaviyo push (claim, bulk import job through the SDK, attempts)"}
    lines = ["| stage | CPU per event, median (runs) | wall per event, median | events/s of one core |",
             "|---|---|---|---|"]
    total = 0.0
    for stage, label in labels.items():
        cpus = [r[stage][0] for r in runs]
        cpu = statistics.median(cpus)
        total += cpu
        lines.append(f"| {label} | {cpu:.0f} µs ({', '.join(f'{c:.0f}' for c in cpus)}) | "
                     f"{statistics.median(r[stage][1] for r in runs):.0f} µs | {1e6 / cpu:,.0f} |")
    lines.append(f"| all three | {total:.0f} µs | – | {1e6 / total:,.0f} |")
    speed = probe.median(started, ended)
    table = "\n".join(lines + [
        "",
        "Machine speed during the runs (the speed probe of benchmarks/common.py: a fixed piece of JSON and "
        f"HMAC work once a second in its own process, median CPU ms; lower is faster): "
        f"{speed:.1f} ms." if speed is not None else "Machine speed: no probe sample."])
    notes = (f"{args.events:,} distinct Stripe customers per run after {WARM} warm-up rows, {args.runs} runs, "
             "each on fresh SQLite files and its own redis-server. CPU is the main thread's "
             "(time.thread_time); the Klaviyo stand-in runs in another thread and is not counted. "
             "Two cores at most give 2,000,000 µs of CPU per second: the last row says what one "
             "core does when it runs all three, nothing else competing.")
    print(table)
    if not args.no_write and not (args.database_url or args.other_tools):
        write_section("Stages alone, in one process", f"python benchmarks/drain.py --events {args.events} "
                      f"--runs {args.runs}", table, notes)


if __name__ == "__main__":
    main()
