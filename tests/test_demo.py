"""`hub demo`: the simulated store, its webhooks as the platforms send them, and a whole run."""
from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests

import standins
from hub.config import Settings
from hub.sync.inference import plan_lines
from standins import klaviyo, store
from standins.payloads import PLATFORMS
from tests.conftest import free_port
from webhooks import get_source

START = datetime(2026, 3, 1, tzinfo=timezone.utc)
ROOT = Path(__file__).resolve().parents[1]


def _story(seed: int = 7, subscribers: int = 60, days: int = 120) -> list[store.Happening]:
    return list(store.simulate(subscribers, START, days, tuple(PLATFORMS), seed=seed,
                               trial_platforms=frozenset({"stripe"})))


def test_the_store_tells_the_same_story_for_a_seed_in_time_order_and_within_its_days():
    story = _story()
    assert story == _story(), "same seed, different story"
    assert story != _story(seed=8)
    assert [h.at for h in story] == sorted(h.at for h in story)
    assert START <= story[0].at and story[-1].at < datetime(2026, 6, 29, tzinfo=timezone.utc)
    kinds = Counter(h.kind for h in story)
    for kind in (store.SIGNUP, store.RENEWAL, store.PAYMENT_FAILED, store.PAYMENT_RECOVERED,
                 store.PLAN_CHANGED, store.CANCEL_REQUESTED, store.CANCELED, store.CONSENT_CHANGED,
                 store.USAGE, store.TRIAL_ENDING):
        assert kinds[kind], f"no {kind} in four months of 60 subscribers"
    assert kinds[store.SIGNUP] >= 60  # everyone joins; some come back after leaving
    # A customer's renewals follow their plan's interval.
    renewals = [h for h in story if h.kind == store.RENEWAL and h.customer.plan.interval == "month"]
    assert all(25 <= (h.customer.period_end - h.customer.period_start).days <= 31 for h in renewals)


def test_every_webhook_of_the_story_verifies_and_normalizes_with_the_hub_s_own_code():
    secrets = {"SHOPIFY_WEBHOOK_SECRET": "shpss_demo", "RECHARGE_WEBHOOK_SECRET": "recharge_demo",
               "STRIPE_WEBHOOK_SECRET": "whsec_demo"}
    settings = Settings.from_env(env={}, overrides=secrets)
    builders = {name: cls(secrets[f"{name.upper()}_WEBHOOK_SECRET"]) for name, cls in PLATFORMS.items()}
    canonical = Counter()
    statuses = Counter()
    payments: dict[str, list[str]] = {}
    for h in _story():
        for webhook in builders[h.customer.platform].webhooks(h):
            source = get_source(webhook.source)
            source.verify(settings, webhook.headers, webhook.body)  # raises when the signature is off
            envelope = source.describe(webhook.headers, webhook.body)
            assert envelope.topic == webhook.topic
            # The subscription app owns Shopify's contracts: their webhooks never reach the hub.
            assert not webhook.topic.startswith("subscription_"), webhook.topic
            events = source.topics[webhook.topic](json.loads(webhook.body), envelope)
            assert events, f"{webhook.source} {webhook.topic} normalized to nothing"
            for event in events:
                canonical[event.source, event.name] += 1
                if event.name in ("subscription.upserted", "subscription.canceled"):
                    statuses[event.data.get("status")] += 1
                    assert event.data["amount"] in {p.amount for p in store.PLANS}
                    assert event.customer.get("email") or event.customer.get("source_id")
                if event.name.startswith("payment.") and event.source == "recharge":
                    payments.setdefault(event.data["source_id"], []).append(event.data["status"])
                if event.source == "shopify" and event.name == "order.paid":
                    assert plan_lines(event.data["line_items"]), "a Shopify subscription order names no selling plan"
    for source, name in [("shopify", "customer.upserted"), ("shopify", "order.paid"), ("shopify", "consent.changed"),
                         ("recharge", "customer.upserted"), ("recharge", "subscription.upserted"),
                         ("recharge", "subscription.canceled"), ("recharge", "payment.succeeded"),
                         ("recharge", "payment.failed"), ("stripe", "trial.ending"), ("stripe", "payment.failed")]:
        assert canonical[source, name], f"the demo's {source} never produces {name}"
    assert {"active", "past_due", "trialing", "canceled"} <= set(statuses), statuses
    # A Recharge cycle that failed and was then paid is one charge: its retries update one payment.
    assert any(seen[0] == "failed" and seen[-1] == "succeeded" for seen in payments.values()), payments


def test_the_klaviyo_stand_in_answers_without_its_contracts_and_validates_with_them(tmp_path):
    body = {"data": {"type": "profile", "attributes": {"email": "a@example.com", "not_a_klaviyo_key": 1}}}
    headers = {"Authorization": "Klaviyo-API-Key pk_x", "revision": "2025-10-15"}

    def status(**contracts) -> int:
        with klaviyo.FakeKlaviyo(api_key="pk_x", **contracts) as fake, requests.Session() as http:
            return http.post(f"{fake.url}/api/profile-import", json=body, headers=headers).status_code

    assert klaviyo.validating(standins.CONTRACTS)
    assert status() == 400  # an unknown attribute, refused as Klaviyo does
    missing = tmp_path / "no-contracts"
    assert not klaviyo.validating(missing)
    assert status(contracts=missing) == 201  # no contracts: same answers, no schema checks


def _read_until(process, marker: str, seconds: float) -> list[str]:
    lines, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if marker in line:
            return lines
    raise AssertionError(f"`hub demo` did not print {marker!r} in {seconds:.0f} s:\n" + "\n".join(lines))


def _field(lines: list[str], label: str) -> str:
    found = [line.split(label, 1)[1].strip() for line in lines if line.startswith(label)]
    assert found, f"no {label!r} line in:\n" + "\n".join(lines)
    return found[0]


def test_a_small_demo_prints_a_login_that_works_and_where_to_find_each_kind_of_failure(tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "demo", "--subscribers", "20", "--months", "1",
         "--port", str(port), "--folder", str(tmp_path / "demo")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    http = requests.Session()
    try:
        lines = _read_until(process, "Ctrl-C stops it", 120)
        url, email, password = _field(lines, "Sync log:"), _field(lines, "Log in as"), _field(lines, "Password:")
        example = re.search(r"search for (\S+@\S+)", _field(lines, "Try:")).group(1)
        assert url == f"http://127.0.0.1:{port}/sync-log/"
        assert re.search(r"Klaviyo stand-in answered .*429", "\n".join(lines))

        # The printed login works.
        login = http.get(url)
        assert login.url.startswith(f"http://127.0.0.1:{port}/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', login.text).group(1)
        wrong = http.post(f"http://127.0.0.1:{port}/login", data={
            "email": email, "password": password + "x", "csrf_token": token, "next": "/sync-log/"})
        assert wrong.status_code == 401
        home = http.post(f"http://127.0.0.1:{port}/login", data={
            "email": email, "password": password, "csrf_token": token, "next": "/sync-log/"})
        assert home.status_code == 200 and home.url == url

        # Searching the suggested demo email opens their page: deliveries to Klaviyo, one
        # of them accepted after Klaviyo asked the hub to wait.
        page = http.get(f"{url}search", params={"q": example})
        assert "/sync-log/subscribers/" in page.url and example in page.text
        assert "Klaviyo asked us to wait 2 s (429); retried at" in page.text
        assert re.search(r"retried at [^,<]+, accepted", page.text)
        assert "Welcome Step" in page.text  # a trigger the rules fired for them

        # A few real failures to work on, and where to find one of each.
        replay = re.search(r"(\d+) events? failed \(e\.g\. #(\d+): [^)]*Invalid API key or access token",
                           _field(lines, "Replay:"))
        assert replay and 1 <= int(replay.group(1)) <= 3, lines
        failed = http.get(f"{url}failed-events").text
        assert f'id="event-{replay.group(2)}"' in failed and "inventory_levels/update" in failed
        retry = re.search(r"(\d+) deliveries gave up \(e\.g\. #(\d+) to ActiveCampaign\)", _field(lines, "Retry:"))
        assert retry and int(retry.group(1)) == 3, lines
        dead = http.get(f"{url}deliveries", params={"status": "dead"}).text
        assert f'id="delivery-{retry.group(2)}"' in dead and "You are not authorized" in dead
        resend = re.search(r"search for (\S+@\S+), then “Send this customer to ActiveCampaign again”",
                           _field(lines, "Resend:"))
        assert resend and "Send this customer to ActiveCampaign again" in http.get(
            f"{url}search", params={"q": resend.group(1)}).text

        # The dashboard has stages for the store's subscribers, and no alarm about webhooks
        # that Shopify could never deliver to a loopback address.
        board = http.get(f"{url}dashboard")
        data = json.loads(re.search(r'id="dashboard-data">(.*?)</script>', board.text, re.DOTALL).group(1))
        latest = {stage: values[-1] for stage, values in data["stages"]["series"].items()}
        # A month-old store: everyone is new, but for a customer who already cancelled (Recharge
        # ends a subscription when it is cancelled, not at the period's end), and the first day's
        # customers once the hub's own quarter-hourly sweep finds them 30 days in: engaged
        # (checked below to be only those).
        assert latest["new"] + latest["churned"] + latest["engaged"] >= 20 and latest["churned"] <= 2, latest
        assert "Webhooks missing" not in board.text

        # Shopify-side subscribers come from Recharge and from selling-plan orders, never from
        # contracts the hub's app does not own.
        with sqlite3.connect(tmp_path / "demo" / "hub.db") as db:
            sources = dict(db.execute("SELECT source, count(*) FROM subscription GROUP BY source").fetchall())
            # Tenure runs from the first subscription or order (else the sign-up), as the rule has it.
            young_engaged = db.execute(
                "SELECT count(*) FROM (SELECT s.stage, s.first_order_at AS o, s.first_seen_at AS seen, "
                "(SELECT min(started_at) FROM subscription WHERE subscriber_id = s.id) AS sub "
                "FROM subscriber s) WHERE stage = 'engaged' "
                "AND julianday('now') - julianday(coalesce(min(o, sub), o, sub, seen)) < 29").fetchone()[0]
        assert young_engaged == 0
        assert sources.get("shopify_inferred") and sources.get("recharge") and "shopify" not in sources, sources
    finally:
        http.close()
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            rest, _ = process.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            pytest.fail("`hub demo` did not stop on Ctrl-C")
    assert process.returncode == 0, rest


@pytest.mark.parametrize("own_name", [None, "mappings"])
def test_the_demo_refuses_a_folder_holding_files_it_did_not_make_and_leaves_them(tmp_path, own_name):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    if own_name:  # a name the demo also uses, in a folder the demo did not make
        (folder / own_name).mkdir()
        (folder / own_name / "klaviyo.yaml").write_text("fields: {}\n")
    result = subprocess.run(
        [sys.executable, "-m", "hub.cli", "demo", "--subscribers", "1", "--months", "1", "--exit",
         "--port", str(free_port()), "--folder", str(folder)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path, timeout=120)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "did not make" in result.stderr and "--folder" in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == sorted(filter(None, ["notes.txt", own_name]))
    assert (folder / "notes.txt").read_text() == "mine"
    if own_name:
        assert (folder / own_name / "klaviyo.yaml").read_text() == "fields: {}\n"


def test_without_the_stand_ins_the_demo_says_which_extra_to_install_and_starts_nothing(tmp_path):
    folder = tmp_path / "demo"
    # None in sys.modules makes `import standins` fail as it does where the package is absent.
    hidden = ("import runpy, sys; sys.modules['standins'] = None; "
              f"sys.argv = ['hub', 'demo', '--exit', '--port', '{free_port()}', '--folder', {str(folder)!r}]; "
              "runpy.run_module('hub.cli', run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", hidden], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "pip install 'subscription-hub[demo]'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not folder.exists()
