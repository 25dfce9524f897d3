"""rules.yaml: the shipped file is valid; a bad key or value is refused, by name."""
import pytest

from hub.errors import ConfigError
from hub.sync.rules import params as params_
from tests.hub.sync.rules.conftest import DEFAULTS, tweak


def test_shipped_file_holds_the_design_numbers(p):
    assert p.renewal.offsets_days == (30, 14, 7, 1)
    assert p.welcome.days == (0, 2, 5)
    assert p.dunning.retries() == (3, 7, 14)
    assert (p.dunning.max_attempts, p.dunning.window_days, p.dunning.mode) == (3, 21, "notify")
    assert p.dunning.reminder_offsets_days == (-3, 0, 3)
    assert (p.card_expiry.days_before, p.card_expiry.enabled, p.trial.days_before) == (30, True, 3)
    assert (p.upsell.usage_threshold, p.upsell.usage_window_days, p.upsell.after_renewal_days) == (0.7, 14, 7)
    assert list(p.loyalty.tiers) == ["Bronze", "Silver", "Gold"]
    assert p.winback.days_after_cancel == 30 and p.lifecycle.new_days == 30


def test_every_key_has_a_comment():
    lines = params_.DEFAULT_PATH.read_text().splitlines()
    bare = [line for line in lines if ":" in line and not line.lstrip().startswith("#")
            and "#" not in line and not line.strip().endswith(":") and not line.lstrip()[0].isdigit()
            and not line.lstrip().startswith(("Bronze", "Silver", "Gold"))]
    assert bare == []


@pytest.mark.parametrize("change, message", [
    ({"dunning.mode": "shout"}, "dunning.mode: must be one of notify, orchestrate"),
    ({"renewal.offsets_days": [7, "x"]}, "renewal.offsets_days[1]: must be an integer"),
    ({"trial.days_before": -1}, "trial.days_before: must be between 0 and 365"),
    ({"card_expiry.enabled": "yes"}, "card_expiry.enabled: must be true or false"),
    ({"timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
    ({"loyalty.tiers": {"Gold": 2000, "Silver": 500}}, "loyalty: tiers must be listed from the lowest"),
    ({"welcome.days": [2, 5]}, "welcome: days must start at 0"),
    ({"upsell.after_renewal_stages": ["happy"]}, "unknown stages ['happy']"),
    ({"renewal.statuses": ["canceled"]}, "renewal: statuses: not live statuses"),
    ({"dunning.retry_days": [7, 3]}, "retry_days must increase"),
])
def test_bad_values_are_named(change, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        tweak(**change)


def test_unknown_and_missing_keys_are_named():
    with pytest.raises(ConfigError, match="dunning.retry_dayz: unknown key"):
        tweak(**{"dunning.retry_dayz": [1]})
    data = {k: v for k, v in DEFAULTS.items() if k != "winback"}
    with pytest.raises(ConfigError, match="winback: missing"):
        params_.parse(data)


def test_unreadable_file(tmp_path):
    bad = tmp_path / "rules.yaml"
    bad.write_text("timezone: [unclosed")
    with pytest.raises(ConfigError, match="rules.yaml: cannot read"):
        params_.load(bad)


def test_orchestrate_caps_retries_by_attempts_and_window():
    p = tweak(**{"dunning.retry_days": [3, 7, 14, 20, 30], "dunning.max_attempts": 4})
    assert p.dunning.retries() == (3, 7, 14, 20)
    assert tweak(**{"dunning.max_attempts": 2}).dunning.retries() == (3, 7)


def _bad_mappings(tmp_path, monkeypatch, **dotted):
    import yaml

    folder = tmp_path / "mappings"
    folder.mkdir()
    data = yaml.safe_load(params_.DEFAULT_PATH.read_text())
    for path, value in dotted.items():
        section, key = path.split(".")
        data[section][key] = value
    (folder / "rules.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv("HUB_MAPPINGS_DIR", str(folder))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'hub.db'}")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # never reached: the check comes first


@pytest.mark.parametrize("args", [["sweep", "--at", "2026-03-01T06:00:00Z"], ["worker", "--burst"]])
def test_hub_stops_at_start_naming_the_bad_key(tmp_path, monkeypatch, args):
    from click.testing import CliRunner

    from hub.cli import main

    _bad_mappings(tmp_path, monkeypatch, **{"dunning.retry_days": [7, 3]})
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "Error: rules.yaml: dunning: retry_days must increase" in result.output


def test_web_app_refuses_a_bad_rules_file(tmp_path, monkeypatch):
    from hub import create_app

    _bad_mappings(tmp_path, monkeypatch, **{"renewal.offset_days": [7]})
    with pytest.raises(ConfigError, match="renewal.offset_days: unknown key"):
        create_app()
