"""The `hub` command, as a user runs it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, select, text, update

from hub import cli
from hub.cli import main
from hub.models import InboxEvent, Subscriber
from hub.sync.inbox import drain_inbox
from hub.sync.readmodel import attempts_of
from tests.conftest import free_port
from tests.samples import API_HEADERS, SECRETS, post, signed, stripe_event

COMMANDS_DIR = Path(cli.__file__).parent / "commands"


@pytest.fixture
def cli_env(settings, monkeypatch):
    for key in ("DATABASE_URL", "REDIS_URL", *SECRETS):
        monkeypatch.setenv(key, str(getattr(settings, key)))
    return CliRunner()


def customer(n=1):
    return stripe_event("customer.created", {"id": f"cus_{n}", "object": "customer", "email": f"c{n}@example.com",
                                             "name": "Cleo Customer", "created": 1_700_000_000},
                        event_id=f"evt_c{n}")


def test_replay_failed_processes_the_rows_again(cli_env, client, hub):
    post(client, "stripe", customer())
    drain_inbox(hub.storage, hub.settings)
    with hub.storage.session() as s:
        s.execute(update(InboxEvent).values(status="failed", error="RuntimeError: an earlier bug"))
        s.execute(update(Subscriber).values(first_name=None))
    result = cli_env.invoke(main, ["replay", "--failed"])
    assert result.exit_code == 0, result.output
    assert "customer.created: processed" in result.output
    with hub.storage.session() as s:
        row = s.scalar(select(InboxEvent))
        assert (row.status, row.error, row.attempts) == ("processed", None, 2)
        assert s.scalar(select(Subscriber.first_name)) == "Cleo"
    assert "it worked this time. What changed: Profile: first name Cleo." in result.output
    again = cli_env.invoke(main, ["replay", "--event", "evt_c1"])
    assert "customer.created: processed — Event #1 was replayed, no change." in again.output
    with hub.storage.session() as s:  # the earlier attempts stay in the event's history
        assert [a["status"] for a in attempts_of(s.scalar(select(InboxEvent)))] == ["failed", "processed", "processed"]


def test_replay_one_event_by_platform_id(cli_env, client, hub):
    post(client, "stripe", customer(2))
    result = cli_env.invoke(main, ["replay", "--event", "evt_c2"])
    assert result.exit_code == 0, result.output
    with hub.storage.session() as s:
        assert s.scalar(select(Subscriber.email)) == "c2@example.com"


def test_replay_without_a_choice_says_how(cli_env):
    result = cli_env.invoke(main, ["replay"])
    assert result.exit_code == 2
    assert "--failed" in result.output


def test_replay_of_an_unknown_event_is_an_error(cli_env, hub):
    result = cli_env.invoke(main, ["replay", "--event", "evt_nope"])
    assert result.exit_code == 1
    assert "no stored event" in result.output


def test_db_upgrade_is_idempotent(cli_env, hub):
    result = cli_env.invoke(main, ["db", "upgrade"])
    assert result.exit_code == 0 and "up to date" in result.output


def test_a_command_s_postgresql_connections_name_it_for_the_database_s_admin(cli_env, hub, database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("application_name is PostgreSQL's")
    assert cli_env.invoke(main, ["db", "upgrade"]).exit_code == 0
    engine = create_engine(database_url)  # opened after the command, as its children open theirs
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW application_name")).scalar() == "hub db"
    finally:
        engine.dispose()


def test_hub_run_on_a_fresh_folder_takes_a_webhook_to_the_api(tmp_path):
    """The README's first command: SQLite file and embedded Redis, nothing configured."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"HUB_API_TOKEN": SECRETS["HUB_API_TOKEN"], "STRIPE_WEBHOOK_SECRET": SECRETS["STRIPE_WEBHOOK_SECRET"]})
    process = subprocess.Popen([sys.executable, "-m", "hub.cli", "run", "--port", str(port)], cwd=tmp_path,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        # A first start makes the database and starts Redis and the web server: beside CI's
        # busiest run (three test processes on two cores) it took longer than 30 s.
        _wait_for(f"{base}/healthz", seconds=90)
        headers, body = signed("stripe", customer(7))
        request = urllib.request.Request(f"{base}/webhooks/stripe", data=body, headers=headers, method="POST")
        assert urllib.request.urlopen(request, timeout=5).status == 200
        found, deadline = None, time.monotonic() + 60  # the worker may still be starting
        while time.monotonic() < deadline:
            try:
                found = json.load(urllib.request.urlopen(urllib.request.Request(
                    f"{base}/api/subscribers/c7@example.com", headers=API_HEADERS), timeout=5))
                break
            except urllib.error.HTTPError:
                time.sleep(0.1)
        assert found and found["subscriber"]["stripe_customer_id"] == "cus_7"
        assert (tmp_path / "hub.db").exists()
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0].decode()
    assert process.returncode == 0, output
    assert "embedded Redis" in output


def _wait_for(url, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(url, timeout=2).status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {seconds} s")


def _fresh_python(code: str, tmp_path, **env) -> str:
    """What `code` prints, run by a new interpreter in tmp_path (nothing imported beforehand)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root, **env)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_hub_help_lists_every_command_without_loading_sdks_or_servers(tmp_path):
    """`hub --help` answers at once: the database layer, Redis, the SDKs, web servers and RQ
    load only for the command using them."""
    out = _fresh_python(
        "import contextlib, io, sys\n"
        "from hub.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as help_text, contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "heavy = ('sqlalchemy', 'redis', 'stripe', 'klaviyo_api', 'hubspot', 'shopify', 'granian', 'gunicorn',\n"
        "         'flask', 'rq', 'hub.commands')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "print(help_text.getvalue())\n", tmp_path)
    loaded, help_text = out.split("\n", 1)
    assert loaded == "[]"
    for name in ("backfill", "db", "deliveries", "demo", "install", "reconcile", "replay", "run", "serve",
                 "sweep", "user", "worker"):
        assert f"\n  {name} " in help_text


def test_each_command_in_hub_help_is_summarised_by_its_own_first_line():
    """The group's summaries, shown without loading the commands, say what each command says."""
    assert sorted(cli.COMMANDS) == sorted(p.stem for p in COMMANDS_DIR.glob("*.py") if p.stem != "__init__")
    for name, summary in cli.COMMANDS.items():
        command = main.get_command(None, name)
        assert command.name == name
        assert command.get_short_help_str(limit=200) == summary


def test_the_hourly_registration_check_runs_without_the_commands(tmp_path):
    """The worker's registration job (jobs) sits below the commands: it never loads one."""
    out = _fresh_python(
        "import sys\n"
        "from hub import jobs\n"
        "from hub.context import make_hub, use_hub\n"
        "hub = make_hub()\n"
        "hub.storage.upgrade()\n"
        "use_hub(hub)\n"
        "print(jobs.registration_job())\n"
        "print(sorted(m for m in sys.modules if m.startswith('hub.commands') or m == 'hub.cli'))\n",
        tmp_path, DATABASE_URL=f"sqlite:///{tmp_path}/hub.db", SHOPIFY_SHOP="", STRIPE_API_KEY="")
    assert out.splitlines() == ["{'problems': 0}", "[]"]
