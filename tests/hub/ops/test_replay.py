"""Replay with a diff: `hub replay --dry-run` shows per subscriber what a replay would change
and keeps nothing; the real replay then applies exactly that."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import delete, func, select, update

from hub.cli import main
from hub.models import Base, Delivery, InboxEvent, Subscriber, Subscription, Trigger
from hub.sync.inbox import drain_inbox
from tests.samples import SECRETS, post, stripe_event, stripe_resource

CREATED = 1_700_000_000


@pytest.fixture
def cli_env(settings, monkeypatch):
    for key in ("DATABASE_URL", "REDIS_URL", *SECRETS):
        monkeypatch.setenv(key, str(getattr(settings, key)))
    monkeypatch.setenv("KLAVIYO_API_KEY", "pk_replay")  # so profiles and triggers are planned
    settings.KLAVIYO_API_KEY = "pk_replay"
    return CliRunner()


def customer_and_subscription(client, hub):
    post(client, "stripe", stripe_event("customer.created", {
        "id": "cus_1", "object": "customer", "email": "cleo@example.com", "name": "Cleo Customer",
        "created": CREATED}, event_id="evt_c1", created=CREATED))
    sub = {**stripe_resource("subscription"), "customer": "cus_1", "status": "active",
           "cancel_at_period_end": False, "cancel_at": None, "canceled_at": None, "pause_collection": None}
    post(client, "stripe", stripe_event("customer.subscription.created", sub, event_id="evt_s1",
                                        created=CREATED + 60))
    drain_inbox(hub.storage, hub.settings)


def lose_state(hub) -> None:
    """What a bug fixed since would have left behind: a profile field, the stage, the
    subscription and its triggers (with their deliveries) never written."""
    with hub.storage.session() as s:
        s.execute(update(Subscriber).values(first_name=None, stage=None))
        s.execute(delete(Delivery))
        s.execute(delete(Trigger))
        s.execute(delete(Subscription))


def snapshot(hub) -> dict:
    """Every table's row count, and every delivery as planned."""
    with hub.storage.session() as s:
        counts = {t.name: s.scalar(select(func.count()).select_from(t)) for t in Base.metadata.sorted_tables}
        deliveries = [(d.connector, d.kind, d.idempotency_key, d.status)
                      for d in s.scalars(select(Delivery).order_by(Delivery.id))]
        people = [(p.first_name, p.stage) for p in s.scalars(select(Subscriber))]
        outcomes = [(r.status, r.attempts, r.outcome) for r in s.scalars(select(InboxEvent).order_by(InboxEvent.id))]
    return {"counts": counts, "deliveries": deliveries, "people": people, "outcomes": outcomes}


def diff_of(output: str) -> list[str]:
    """The per-subscriber part of the command's output."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Subscriber #"))
    return [line for line in lines[start:] if line.startswith(("Subscriber #", "  "))]


def test_dry_run_changes_nothing_and_shows_the_diff_the_replay_then_applies(cli_env, client, hub):
    customer_and_subscription(client, hub)
    lose_state(hub)
    before = snapshot(hub)

    dry = cli_env.invoke(main, ["replay", "--since", "2000-01-01", "--source", "stripe", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert snapshot(hub) == before
    diff = diff_of(dry.output)
    assert diff[0] == "Subscriber #1 (c***@example.com), events #1, #2:"
    assert "  Profile: first name Cleo" in diff
    assert "  Stage: — → New" in diff
    triggers = next(line for line in diff if line.startswith("  Triggers: "))
    assert "Subscription Started" in triggers and "Welcome Step" in triggers
    deliveries = next(line for line in diff if line.startswith("  Deliveries: "))
    assert "klaviyo profile" in deliveries and "klaviyo event Welcome Step" in deliveries
    assert "Dry run: 2 event(s) replayed, 1 subscriber would change; nothing was kept." in dry.output

    real = cli_env.invoke(main, ["replay", "--since", "2000-01-01", "--source", "stripe"])
    assert real.exit_code == 0, real.output
    assert diff_of(real.output) == diff
    after = snapshot(hub)
    assert after["people"] == [("Cleo", "new")]
    assert len(after["deliveries"]) == len(deliveries.split(", "))
    with hub.storage.session() as s:
        fired = sorted(s.scalars(select(Trigger.name)))
    assert fired == sorted(triggers.removeprefix("  Triggers: ").split(", "))


def test_a_replay_out_of_the_time_range_or_source_matches_nothing(cli_env, client, hub):
    customer_and_subscription(client, hub)
    result = cli_env.invoke(main, ["replay", "--until", "2000-01-01", "--dry-run"])
    assert result.exit_code == 1 and "no stored event matches" in result.output
    result = cli_env.invoke(main, ["replay", "--since", "2000-01-01", "--source", "chargebee", "--dry-run"])
    assert result.exit_code == 1 and "no stored event matches" in result.output


def test_a_new_rules_file_shows_what_it_would_fire_without_keeping_it(cli_env, client, hub, tmp_path):
    customer_and_subscription(client, hub)
    lose_state(hub)
    before = snapshot(hub)
    rules = yaml.safe_load(Path(hub.settings.HUB_MAPPINGS_DIR, "rules.yaml").read_text())
    rules["lifecycle"]["health"]["live_subscription"] = 0  # a running subscription earns no points
    new_file = tmp_path / "rules.new.yaml"
    new_file.write_text(yaml.safe_dump(rules, sort_keys=False))

    configured = diff_of(cli_env.invoke(main, ["replay", "--since", "2000-01-01", "--dry-run"]).output)
    proposed = cli_env.invoke(main, ["replay", "--dry-run", "--rules", str(new_file)])  # every stored event
    assert proposed.exit_code == 0, proposed.output
    assert snapshot(hub) == before
    assert not any("health score" in line for line in configured)  # 60 again by the second event
    assert "  The hub's assessment: health score 60 → 50" in diff_of(proposed.output)


def test_a_bad_rules_file_stops_before_any_event_is_touched(cli_env, client, hub, tmp_path):
    customer_and_subscription(client, hub)
    before = snapshot(hub)
    bad = tmp_path / "rules.bad.yaml"
    bad.write_text("timezone: UTC\n")
    result = cli_env.invoke(main, ["replay", "--since", "2000-01-01", "--rules", str(bad)])
    assert result.exit_code == 1 and "rules.bad.yaml" in result.output
    assert snapshot(hub) == before


def test_a_failed_event_whose_replay_moves_the_stage_is_said_to_work_this_time(cli_env, client, hub):
    customer_and_subscription(client, hub)
    lose_state(hub)
    with hub.storage.session() as s:
        s.execute(update(InboxEvent).where(InboxEvent.id == 1).values(status="failed", error="RuntimeError: a bug"))
    result = cli_env.invoke(main, ["replay", "--failed", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "stripe customer.created: processed — Event #1 was processed again: it worked this time." in result.output
    assert "  Stage: — → New" in diff_of(result.output)


def test_a_real_replay_names_what_to_replay(cli_env, client, hub):
    customer_and_subscription(client, hub)
    result = cli_env.invoke(main, ["replay", "--rules", "mappings/rules.yaml"])
    assert result.exit_code == 2 and "a --dry-run may name none" in result.output
