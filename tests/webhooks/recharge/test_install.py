"""`hub install` registers Recharge's webhooks through its API, `--check` reports them, and
nothing is asked of Recharge without RECHARGE_API_KEY."""
from __future__ import annotations

from click.testing import CliRunner

from hub import cli
from hub.config import Settings
from hub.ops import registrations
from standins.recharge import FakeRecharge
from webhooks.recharge.webhook import TOPICS

TOKEN, SECRET, HUB_URL = "rc_install_token", "rc_client_secret", "https://hub.example.com"


def settings(rc: FakeRecharge, **values) -> Settings:
    return Settings.from_env(env={}, overrides={"RECHARGE_API_KEY": TOKEN, "RECHARGE_WEBHOOK_SECRET": SECRET,
                                                "RECHARGE_API_BASE": rc.url, "HUB_BASE_URL": HUB_URL, **values})


def test_install_makes_one_webhook_per_topic_then_changes_nothing_and_check_agrees():
    with FakeRecharge(token=TOKEN) as rc:
        before = registrations.check_recharge(settings(rc))
        first = registrations.install_recharge(settings(rc))
        made = {(w["topic"], w["address"]) for w in rc.webhooks}
        second = registrations.install_recharge(settings(rc))
        after = registrations.check_recharge(settings(rc))
        writes = [c for c in rc.calls if c.method != "GET"]
    assert before.status == "wrong" and f"{len(TOPICS)} of {len(TOPICS)} webhooks missing" in before.message
    assert first.status == "ok" and f"created {len(TOPICS)}" in first.message
    assert made == {(t, f"{HUB_URL}/webhooks/recharge") for t in TOPICS}
    assert second.status == "ok" and second.message.startswith("no change")
    assert after.status == "ok" and len(writes) == len(TOPICS)


def test_a_deleted_webhook_is_reported_and_made_again_and_a_new_hub_url_moves_them():
    with FakeRecharge(token=TOKEN) as rc:
        registrations.install_recharge(settings(rc))
        gone = rc.webhooks.pop(0)
        check = registrations.check_recharge(settings(rc))
        again = registrations.install_recharge(settings(rc))
        moved = registrations.install_recharge(settings(rc, HUB_BASE_URL="https://new-hub.example.com"))
        addresses = {w["address"] for w in rc.webhooks}
        count = len(rc.webhooks)
    assert check.status == "wrong" and gone["topic"] in check.message and "hub install" in check.message
    assert again.message.startswith("created 1 of")
    assert moved.message.startswith(f"re-pointed {len(TOPICS)} of")
    assert addresses == {"https://new-hub.example.com/webhooks/recharge"} and count == len(TOPICS)


def test_without_the_api_key_nothing_is_asked_and_a_refused_token_says_what_to_make():
    with FakeRecharge(token=TOKEN) as rc:
        off = registrations.install_recharge(settings(rc, RECHARGE_API_KEY=""))
        assert rc.calls == []
        refused = registrations.check_recharge(settings(rc, RECHARGE_API_KEY="wrong"))
        no_secret = registrations.install_recharge(settings(rc, RECHARGE_WEBHOOK_SECRET=""))
    assert off.status == "off" and "RECHARGE_API_KEY" in off.message
    assert refused.status == "wrong" and "HTTP 401" in refused.message and "API token" in refused.message
    assert no_secret.status == "wrong" and "RECHARGE_WEBHOOK_SECRET" in no_secret.message


def test_the_install_command_prints_the_recharge_line(monkeypatch, tmp_path):
    with FakeRecharge(token=TOKEN) as rc:
        for key, value in {"RECHARGE_API_KEY": TOKEN, "RECHARGE_WEBHOOK_SECRET": SECRET,
                           "RECHARGE_API_BASE": rc.url, "HUB_BASE_URL": HUB_URL,
                           "DATABASE_URL": f"sqlite:///{tmp_path / 'hub.db'}"}.items():
            monkeypatch.setenv(key, value)
        result = CliRunner().invoke(cli.main, ["install"])
        check = CliRunner().invoke(cli.main, ["install", "--check"])
    [line] = [x for x in result.output.splitlines() if "Recharge:" in x]
    assert line.startswith("ok") and f"created {len(TOPICS)} of {len(TOPICS)} webhooks" in line
    [checked] = [x for x in check.output.splitlines() if "Recharge:" in x]
    assert checked.startswith("ok") and f"{len(TOPICS)} webhooks at {HUB_URL}/webhooks/recharge" in checked
