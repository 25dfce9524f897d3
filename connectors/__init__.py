"""The destination tools: a registry of connectors and their field maps (mappings/<name>.yaml).

A connector is on when every setting it names is set; `configured(settings)` says which are
on and why the others are off. A mapping file says which kinds of delivery a connector gets
(`send`), under which names the profile fields go (`fields`), which triggers it receives
(`triggers`), and the connector's own options; an unknown key is an error at start.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from connectors.activecampaign import ActiveCampaignConnector
from connectors.base import KINDS, Connector
from connectors.hubspot import HubSpotConnector
from connectors.klaviyo import KlaviyoConnector
from connectors.ratelimit import Rate
from connectors.webhook import WebhookConnector
from hub.errors import ConfigError

CONNECTORS: dict[str, type[Connector]] = {
    cls.name: cls
    for cls in (KlaviyoConnector, HubSpotConnector, ActiveCampaignConnector, WebhookConnector)
}

# The canonical profile fields (hub.sync.outbox.profile_fields) and their default names in every tool.
PROFILE_FIELDS = ("stage", "health_score", "tier", "points", "subscription_status", "subscription_source", "plan",
                  "mrr", "next_renewal_at", "lifetime_value")
DEFAULT_FIELDS = {f: f"hub_{f}" for f in PROFILE_FIELDS}

_COMMON_KEYS = ("send", "fields", "triggers", "rate_limits")
_cache: dict[Path, tuple[float, dict]] = {}


def slow_tools() -> frozenset[str]:
    """Tools whose documented rate limit takes deliveries far slower than the others' (their
    pushes queue behind other work: hub/queues.py)."""
    return frozenset(name for name, cls in CONNECTORS.items() if cls.slow)


def configured(settings) -> list[tuple[str, bool, str]]:
    """(name, on, why) for every connector, in registry order."""
    rows = []
    for name, cls in CONNECTORS.items():
        missing = cls.missing_settings(settings)
        if missing:
            rows.append((name, False, f"{', '.join(missing)} not set"))
        else:
            rows.append((name, True, "sends " + ", ".join(load_mapping(settings, name)["send"])))
    return rows


def load_mapping(settings, name: str) -> dict:
    """The validated mapping of connector `name` with defaults (re-read when the file changes)."""
    cls = CONNECTORS[name]
    path = Path(settings.HUB_MAPPINGS_DIR) / f"{name}.yaml"
    stamp = path.stat().st_mtime if path.exists() else 0.0
    cached = _cache.get(path)
    if cached and cached[0] == stamp:
        return cached[1]
    raw = (yaml.safe_load(path.read_text()) if path.exists() else None) or {}
    mapping = validate_mapping(cls, raw, str(path))
    _cache[path] = (stamp, mapping)
    return mapping


def validate_mapping(cls: type[Connector], raw: dict, where: str) -> dict:
    """Defaults + checks for one mapping; ConfigError names the file and the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {type(raw).__name__}")
    unknown = set(raw) - set(_COMMON_KEYS) - set(cls.options)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: "
                          f"{sorted(set(_COMMON_KEYS) | set(cls.options))}")
    send = tuple(raw.get("send", cls.kinds))
    bad = [k for k in send if k not in cls.kinds or k not in KINDS]
    if bad:
        raise ConfigError(f"{where}: send {bad} not supported by {cls.name} "
                          f"(it can send {list(cls.kinds)})")
    fields = dict(DEFAULT_FIELDS)
    for field, target in (raw.get("fields") or {}).items():
        if field not in DEFAULT_FIELDS:
            raise ConfigError(f"{where}: fields.{field} is not a profile field "
                              f"({', '.join(PROFILE_FIELDS)})")
        fields[field] = target or None  # null: not sent to this tool
    triggers = raw.get("triggers", "all")
    if isinstance(triggers, list):
        triggers = {t: t for t in triggers}
    if triggers != "all" and not isinstance(triggers, dict):
        raise ConfigError(f"{where}: triggers must be 'all', a list of trigger names "
                          "or a map of trigger name → name in the tool")
    try:
        rate_limits = {k: tuple(Rate.parse(r) for r in ([v] if isinstance(v, str) else v))
                       for k, v in (raw.get("rate_limits") or {}).items()}
    except ValueError as exc:
        raise ConfigError(f"{where}: rate_limits: {exc}") from None
    options = {k: raw.get(k, default) for k, default in cls.options.items()}
    return {"send": send, "fields": fields, "triggers": triggers, "rate_limits": rate_limits,
            **options}


def trigger_name(mapping: dict, name: str) -> str | None:
    """The name a trigger goes under in this tool, or None when the tool does not get it."""
    triggers = mapping["triggers"]
    if triggers == "all":
        return name
    return triggers.get(name)


def build(name: str, settings, limiter=None) -> Connector:
    """A connector instance with its mapping."""
    if name not in CONNECTORS:
        raise ConfigError(f"unknown connector {name!r}; known: {', '.join(CONNECTORS)}")
    return CONNECTORS[name](settings, field_map=load_mapping(settings, name), limiter=limiter)


__all__ = ["CONNECTORS", "PROFILE_FIELDS", "DEFAULT_FIELDS", "configured", "load_mapping",
           "validate_mapping", "trigger_name", "build"]
