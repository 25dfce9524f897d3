"""Time per request of the Flask paths, in process: staff login (right and wrong password), a
sync log page, /metrics, and a signed Shopify webhook through the WSGI front.

Each checkout named with --tree runs in its own interpreter, in turns (round 1: A then B, round 2:
A then B, ...), so two versions of the code are compared side by side under the same load.
Requests go through Flask's test client (no socket, no server): what is timed is the hub's own
work per request, which is what a library swap changes. A wrong password comes from a new
address each time, so the login limit never answers instead of the password check.

Usage: python benchmarks/web_requests.py [--tree PATH ...] [--rounds 3]
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
SECRET = "bench-secret"
PASSWORD = "correct horse battery"
# (path, requests per round)
PATHS = {"POST /login (right password)": 20, "POST /login (wrong password)": 20,
         "POST /login (limited: 429)": 100,
         "GET /sync-log/deliveries (logged in)": 200, "GET /metrics": 200,
         "POST /webhooks/shopify": 400}


def measure(counts: dict[str, int], redis_url: str) -> dict[str, list[tuple[float, float]]]:
    """(wall, CPU) seconds per request of each path, on a fresh SQLite database (in the child).
    CPU time is this thread's own, which the other work on a shared machine does not inflate;
    wall time also holds the waits on Redis and SQLite."""
    from hub import create_app, make_hub
    from hub.models import StaffUser

    folder = Path(tempfile.mkdtemp(prefix="bench-web-"))
    os.chdir(folder)  # make_hub reads a .env in the working folder: there is none here
    hub = make_hub({"DATABASE_URL": f"sqlite:///{folder / 'hub.db'}", "REDIS_URL": redis_url,
                    "SHOPIFY_WEBHOOK_SECRET": SECRET, "HUB_SECRET_KEY": "bench", "HUB_LOG_LEVEL": "WARNING"})
    hub.storage.upgrade()
    with hub.storage.session() as s:
        user = StaffUser(email="sam@shop.test", role="operator")
        user.set_password(PASSWORD)
        s.add(user)
    app = create_app(hub=hub)
    hub.queues.connection.flushdb()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in counts}

    def timed(call):
        wall, cpu = time.perf_counter(), time.thread_time()
        response = call()
        return (time.perf_counter() - wall, time.thread_time() - cpu), response.status_code

    def login(client, password: str, address: str):
        html = client.get("/login", environ_base={"REMOTE_ADDR": address}).get_data(as_text=True)
        token = html.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        return timed(lambda: client.post("/login", data={"email": "sam@shop.test", "password": password,
                                                         "csrf_token": token},
                                         environ_base={"REMOTE_ADDR": address}))

    for i in range(counts["POST /login (right password)"]):
        spent, status = login(app.test_client(), PASSWORD, "127.0.0.1")
        assert status == 302, status
        times["POST /login (right password)"].append(spent)
    for i in range(counts["POST /login (wrong password)"]):
        spent, status = login(app.test_client(), "a guess", f"10.9.{i // 250}.{i % 250}")
        assert status == 401, status
        times["POST /login (wrong password)"].append(spent)
    guesser = app.test_client()
    while login(guesser, "a guess", "10.8.0.1")[1] == 401:
        pass
    for i in range(counts["POST /login (limited: 429)"]):
        spent, status = login(guesser, PASSWORD, "10.8.0.1")
        assert status == 429, status
        times["POST /login (limited: 429)"].append(spent)

    staff = app.test_client()
    assert login(staff, PASSWORD, "127.0.0.1")[1] == 302
    for name, path in (("GET /sync-log/deliveries (logged in)", "/sync-log/deliveries"),
                       ("GET /metrics", "/metrics")):
        for _ in range(counts[name]):
            spent, status = timed(lambda: staff.get(path))  # noqa: B023 (called at once)
            times[name].append(spent)
            assert status == 200, (path, status)

    body = json.dumps({"id": 820982911946154508, "email": "jon@example.com", "total_price": "403.00",
                       "currency": "USD", "updated_at": "2026-11-01T12:00:00-05:00"}).encode()
    digest = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()
    client = app.test_client()
    for i in range(counts["POST /webhooks/shopify"]):
        headers = {"Content-Type": "application/json", "X-Shopify-Topic": "orders/create",
                   "X-Shopify-Hmac-Sha256": digest, "X-Shopify-Shop-Domain": "bench.myshopify.com",
                   "X-Shopify-API-Version": "2025-10", "X-Shopify-Webhook-Id": f"bench-{os.getpid()}-{i}"}
        spent, status = timed(lambda: client.post("/webhooks/shopify", data=body, headers=headers))  # noqa: B023
        times["POST /webhooks/shopify"].append(spent)
        assert status == 200, status
    return times


def run_child(tree: Path, redis_url: str) -> dict[str, list[list[float]]]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, str(HERE), "--child", redis_url], env=env, cwd=tree,
                         capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{tree}: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", type=Path,
                        help="a checkout of the hub to time (repeat to compare); default: this one")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(PATHS, args.child)))
        return
    sys.path.insert(0, str(HERE.parents[1]))
    from benchmarks.common import start_redis

    trees = [t.resolve() for t in (args.tree or [HERE.parents[1]])]
    samples = {t: {name: [] for name in PATHS} for t in trees}
    with tempfile.TemporaryDirectory() as tmp:
        redis, url = start_redis(Path(tmp))
        try:
            for _ in range(args.rounds):
                for tree in trees:
                    for name, values in run_child(tree, url).items():
                        samples[tree][name].extend(values)
        finally:
            redis.terminate()
            redis.wait(10)
    print("Medians per request, wall time (CPU time of the request's thread).\n")
    print("| path | " + " | ".join(str(t) for t in trees) + " |")
    print("|---|" + "---|" * len(trees))
    for name in PATHS:
        cells = []
        for t in trees:
            wall = statistics.median(w for w, _ in samples[t][name]) * 1000
            cpu = statistics.median(c for _, c in samples[t][name]) * 1000
            cells.append(f"{wall:.2f} ms ({cpu:.2f} ms)")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
