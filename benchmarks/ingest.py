"""Webhook ingest: signed Shopify webhooks stored durably per second, against hello-world Flask.

Both apps are served the same way (granian, hub serve's processes and threads; the hub also on its
former gunicorn sync workers) and loaded with wrk from
Debian's package. Each request carries a new X-Shopify-Webhook-Id, so every one is a new
inbox row (a duplicate would skip the insert). With --postgres the same hub also runs on a
PostgreSQL started from Debian's package on loopback (as benchmarks/e2e.py --compare-postgres
does; run as root). Usage: python benchmarks/ingest.py [--runs 5] [--postgres]
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import (  # noqa: E402
    SpeedProbe,
    cpu_seconds,
    free_port,
    process_tree,
    sqlite_connect,
    start_redis,
    wait_for,
    write_section,
)
from benchmarks.e2e import start_postgres, stop_postgres  # noqa: E402

SECRET = "bench-secret"
HELLO = textwrap.dedent('''
    from flask import Flask, jsonify
    app = Flask(__name__)

    @app.post("/webhooks/shopify")
    def hello():
        return jsonify(received=True)
''')


def shopify_body() -> bytes:
    sample = ROOT / "tests" / "samples" / "shopify" / "orders_create.json"
    if sample.exists():
        return sample.read_bytes()
    return json.dumps({"id": 820982911946154508, "email": "jon@example.com", "total_price": "403.00",
                       "currency": "USD", "updated_at": "2026-11-01T12:00:00-05:00"}).encode()


def wrk_script(body: bytes, delay_ms: float | None) -> str:
    digest = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()
    lua_body = body.decode().replace("\\", "\\\\").replace("]]", "] ]")
    delay = f"function delay() return {delay_ms} end" if delay_ms else ""
    return textwrap.dedent(f'''
        counter = 0
        wrk.method = "POST"
        wrk.body = [[{lua_body}]]
        wrk.headers["Content-Type"] = "application/json"
        wrk.headers["X-Shopify-Topic"] = "orders/create"
        wrk.headers["X-Shopify-Hmac-Sha256"] = "{digest}"
        wrk.headers["X-Shopify-Shop-Domain"] = "bench.myshopify.com"
        wrk.headers["X-Shopify-API-Version"] = "2025-10"
        function setup(thread) thread:set("prefix", tostring(math.random(1, 1e9))) end
        function request()
            counter = counter + 1
            wrk.headers["X-Shopify-Webhook-Id"] = prefix .. "-" .. counter
            return wrk.format()
        end
        {delay}
    ''')


def run_wrk(url: str, script: Path, seconds: int, connections: int) -> dict:
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rate": rate, "p99_ms": float(p99.group(1)) * scale, "errors": int(non2xx.group(1)) if non2xx else 0}


def serve(args: list[str], env: dict, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measured(url: str, script: Path, seconds: int, server: subprocess.Popen) -> dict:
    """wrk's numbers plus the server's CPU time per request over the run."""
    pids = process_tree(server.pid)
    before = cpu_seconds(pids)
    result = run_wrk(url, script, seconds, 16)
    result["cpu_us"] = (cpu_seconds(pids) - before) / max(1.0, result["rate"] * seconds) * 1e6
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1, help="web processes (hub serve's default)")
    parser.add_argument("--threads", type=int, default=1, help="threads per process (hub serve's default)")
    parser.add_argument("--postgres", action="store_true",
                        help="add a row: the same hub on PostgreSQL (started on loopback; run as root)")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave RESULTS.md alone")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    tmp = Path(tempfile.mkdtemp(prefix="hub-bench-"))
    redis_proc, redis_url = start_redis(tmp)
    names = ("hub", "hub-postgres", "hub-gunicorn", "hello") if args.postgres else ("hub", "hub-gunicorn", "hello")
    ports = {name: free_port() for name in names}
    postgres_data, postgres_url = start_postgres(free_port()) if args.postgres else (None, None)
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{tmp / 'hub.db'}", REDIS_URL=redis_url,
               SHOPIFY_WEBHOOK_SECRET=SECRET, HUB_LOG_LEVEL="WARNING",
               # The hub of this checkout, whichever one pip installed (hello.py lives in tmp).
               PYTHONPATH=os.pathsep.join([str(ROOT), str(tmp)]))
    (tmp / "hello.py").write_text(HELLO)
    hub_serve = [sys.executable, "-m", "hub.cli", "serve", "--workers", str(args.workers),
                 "--threads", str(args.threads)]
    servers = {
        "hub": serve(hub_serve + ["--port", str(ports["hub"])], env, tmp),
        # What `hub serve` ran before granian: gunicorn's sync workers, 4 processes.
        "hub-gunicorn": serve(hub_serve[:4] + ["--server", "gunicorn", "--workers", "4", "--threads", "1",
                                              "--no-upgrade", "--port", str(ports["hub-gunicorn"])], env, tmp),
        **({"hub-postgres": serve(hub_serve + ["--port", str(ports["hub-postgres"])],
                                  dict(env, DATABASE_URL=postgres_url), tmp)} if args.postgres else {}),
        "hello": serve([sys.executable, "-m", "granian", "--interface", "wsgi", "--workers", str(args.workers),
                        "--blocking-threads", str(args.threads), "--no-ws", "--log-level", "warning",
                        "--port", str(ports["hello"]), "hello:app"], env, tmp),
    }
    body = shopify_body()
    full, paced = tmp / "full.lua", tmp / "paced.lua"
    full.write_text(wrk_script(body, None))
    # 20 connections each waiting 20 ms between requests: about 1,000 requests per second.
    paced.write_text(wrk_script(body, 20))
    probe = SpeedProbe().__enter__()
    try:
        targets = {name: f"http://127.0.0.1:{port}/webhooks/shopify" for name, port in ports.items()}
        for url in targets.values():
            wait_for(url.rsplit("/", 2)[0] + "/healthz", 60)
        # A full-length warm-up run per server, not counted: a hub's first runs are slower
        # (imports, connections, the database files' first growth) than its later ones.
        for url in targets.values():
            run_wrk(url, full, args.seconds, 16)
        rates = {name: [] for name in targets}
        for _ in range(args.runs):
            for name, url in targets.items():  # interleaved, so drift hits all alike
                rates[name].append(measured(url, full, args.seconds, servers[name]))
        paced_runs = {name: [run_wrk(targets[name], paced, args.seconds, 20) for _ in range(3)]
                      for name in ("hub", "hub-postgres", "hello") if name in targets}
        stored = _count_rows(tmp / "hub.db") + (_count_postgres_rows(postgres_url) if args.postgres else 0)
    finally:
        probe.__exit__(None, None, None)
        for server in servers.values():
            server.terminate()
        for server in servers.values():
            server.wait(30)
        redis_proc.terminate()
        if postgres_data is not None:
            stop_postgres(postgres_data)
    speed = probe.median(0, float("inf"))
    med = {n: statistics.median(r["rate"] for r in rs) for n, rs in rates.items()}
    cpu = {n: statistics.median(r["cpu_us"] for r in rs) for n, rs in rates.items()}
    errors = sum(r["errors"] for name in names if name != "hello" for r in rates[name] + paced_runs.get(name, []))
    runs = {n: ", ".join(f"{r['rate']:.0f}" for r in rs) for n, rs in rates.items()}

    def paced_cell(name: str) -> str:
        if name not in paced_runs:
            return "| – | – |"
        rs = paced_runs[name]
        return (f"| {statistics.median(r['p99_ms'] for r in rs):.1f} ms "
                f"| {statistics.median(r['rate'] for r in rs):.0f} req/s |")

    labels = {"hub": f"hub `POST /webhooks/shopify` (verify + durable insert), granian {args.workers} × {args.threads}",
              "hub-postgres": f"the same hub on PostgreSQL (loopback), granian {args.workers} × {args.threads}",
              "hub-gunicorn": "the same hub on gunicorn, 4 sync workers (the server before this one)",
              "hello": f"hello-world Flask, granian {args.workers} × {args.threads}"}
    table = "\n".join([
        "| server | median req/s (runs) | server CPU per request (median) | p99 at ~1,000 req/s | offered rate |",
        "|---|---|---|---|---|",
        *[f"| {labels[n]} | {med[n]:.0f} ({runs[n]}) | {cpu[n]:.0f} µs {paced_cell(n)}" for n in targets],
        "",
        f"Ratio hub / hello-world: **{med['hub'] / med['hello']:.2f}×** (target ≥ 0.7×). Server CPU per "
        f"webhook, granian / gunicorn: **{cpu['hub'] / cpu['hub-gunicorn']:.2f}×**. "
        + (f"PostgreSQL / SQLite: **{med['hub-postgres'] / med['hub']:.2f}×**. " if args.postgres else "") +
        f"Inbox rows stored: {stored}; non-2xx answers: {errors}.",
        "",
        "Machine speed during the runs (the speed probe of benchmarks/common.py: a fixed piece of JSON and "
        f"HMAC work once a second in its own process, median CPU ms; lower is faster): {speed:.1f} ms.",
    ])
    notes = (("Rows with PostgreSQL: a server started from Debian's package on loopback (default settings, "
              "synchronous_commit on). " if args.postgres else "") +
             f"SQLite (WAL) inbox, Redis on loopback, wrk `-t2 -c16 -d{args.seconds}s` for the rate "
             f"({args.runs} interleaved runs, median) and `-c20` with a 20 ms delay per connection for "
             "the latency at about 1,000 req/s (median p99 of 3 runs). Server CPU is the user + system "
             "time of the server's processes (from /proc) over a run, divided by the requests it answered. "
             "No worker drains during the run: this measures the acknowledgement path alone.")
    print(table)
    if not args.no_write:
        write_section("Webhook ingest", "python benchmarks/ingest.py", table, notes)
    shutil.rmtree(tmp, ignore_errors=True)


def _count_rows(path: Path) -> int:
    with sqlite_connect(path) as conn:
        return conn.execute("select count(*) from inbox_event").fetchone()[0]


def _count_postgres_rows(url: str) -> int:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        return conn.execute("select count(*) from inbox_event").fetchone()[0]


if __name__ == "__main__":
    main()
