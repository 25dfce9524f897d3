"""Rule parameters: mappings/rules.yaml loaded and validated into frozen dataclasses.

Every key is required and typed; an unknown key, a missing one or a value out of range
raises ConfigError naming it ("rules.yaml: dunning.mode must be one of ..."), so `hub`
stops at start rather than misfiring reminders later.
"""
from __future__ import annotations

import functools
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from hub.config import PROJECT_DIR
from hub.errors import ConfigError
from hub.events import STAGES

DEFAULT_PATH = PROJECT_DIR / "mappings" / "rules.yaml"


def _n(lo=None, hi=None):
    """A field with an allowed range (inclusive)."""
    return field(metadata={"min": lo, "max": hi})


@dataclass(frozen=True)
class Penalties:
    payment_failed: int = _n(0, 100)
    cancel_scheduled: int = _n(0, 100)
    churned: int = _n(0, 100)


@dataclass(frozen=True)
class Health:
    recency: dict[int, int] = _n(0, 100)
    frequency: dict[int, int] = _n(0, 100)
    tenure: dict[int, int] = _n(0, 100)
    live_subscription: int = _n(0, 100)
    penalties: Penalties = _n()

    def check(self):
        top = max(self.recency.values()) + max(self.frequency.values()) + \
            max(self.tenure.values()) + self.live_subscription
        return None if top <= 100 else f"the best possible score is {top}; keep it at most 100"


@dataclass(frozen=True)
class Lifecycle:
    new_days: int = _n(1, 365)
    silence_days: int = _n(1, 3650)
    lapsed_days: int = _n(1, 3650)
    loyal_days: int = _n(0, 3650)
    loyal_min_health: int = _n(0, 100)
    health: Health = _n()

    def boundaries(self) -> dict[str, tuple[int, ...]]:
        """Day counts at which a stage or score can change with no new data (daily sweep)."""
        # Recency buckets read "at most N days": the score drops on day N + 1.
        inactive = {d + 1 for d in self.health.recency} | {self.silence_days, self.lapsed_days}
        tenure = {*self.health.tenure, self.new_days, self.loyal_days}
        return {"inactive": tuple(sorted(inactive)), "tenure": tuple(sorted(d for d in tenure if d))}


@dataclass(frozen=True)
class Welcome:
    days: tuple[int, ...] = _n(0, 365)

    def check(self):
        ok = self.days and self.days[0] == 0 and list(self.days) == sorted(set(self.days))
        return None if ok else "days must start at 0 and increase"


@dataclass(frozen=True)
class Renewal:
    offsets_days: tuple[int, ...] = _n(1, 365)
    statuses: tuple[str, ...] = _n()

    def check(self):
        bad = set(self.statuses) - {"trialing", "active", "past_due", "paused"}
        return f"statuses: not live statuses {sorted(bad)}" if bad else None


@dataclass(frozen=True)
class Dunning:
    mode: Literal["notify", "orchestrate"] = _n()
    retry_days: tuple[int, ...] = _n(1, 365)
    max_attempts: int = _n(0, 20)
    window_days: int = _n(1, 365)
    reminder_offsets_days: tuple[int, ...] = _n(-60, 60)
    recovery_days: int = _n(1, 365)

    def check(self):
        return None if list(self.retry_days) == sorted(set(self.retry_days)) else "retry_days must increase"

    def retries(self) -> tuple[int, ...]:
        """Retry days after the first failure: the cadence, capped by attempts and window."""
        return tuple(d for d in self.retry_days if d <= self.window_days)[:self.max_attempts]


@dataclass(frozen=True)
class CardExpiry:
    enabled: bool = _n()
    days_before: int = _n(1, 365)


@dataclass(frozen=True)
class Trial:
    days_before: int = _n(0, 365)


@dataclass(frozen=True)
class Upsell:
    usage_threshold: float = _n(0.01, 10)
    usage_window_days: int = _n(1, 365)
    usage_aggregate: Literal["sum", "max"] = _n()
    after_renewal_days: int = _n(0, 365)
    after_renewal_stages: tuple[str, ...] = _n()
    plan_limits: dict[str, int] = _n(1, None)

    def check(self):
        bad = set(self.after_renewal_stages) - set(STAGES)
        return f"after_renewal_stages: unknown stages {sorted(bad)}" if bad else None


@dataclass(frozen=True)
class Loyalty:
    points_per_unit: float = _n(0, 1000)
    tiers: dict[str, int] = _n(0, None)

    def check(self):
        values = list(self.tiers.values())
        ok = self.tiers and values == sorted(set(values))
        return None if ok else "tiers must be listed from the lowest threshold up, thresholds distinct"


@dataclass(frozen=True)
class WinBack:
    days_after_cancel: int = _n(1, 3650)


@dataclass(frozen=True)
class Stock:
    enabled: bool = _n()


@dataclass(frozen=True)
class RuleParams:
    timezone: str = _n()
    max_catch_up_days: int = _n(0, 31)
    lifecycle: Lifecycle = _n()
    welcome: Welcome = _n()
    renewal: Renewal = _n()
    dunning: Dunning = _n()
    card_expiry: CardExpiry = _n()
    trial: Trial = _n()
    upsell: Upsell = _n()
    loyalty: Loyalty = _n()
    winback: WinBack = _n()
    stock: Stock = _n()

    def check(self):
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            return f"timezone: unknown time zone {self.timezone!r}"
        return None

    @functools.cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def load(path: str | Path | None = None) -> RuleParams:
    """Parameters from a YAML file (default: the project's mappings/rules.yaml)."""
    path = Path(path or DEFAULT_PATH)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path.name}: cannot read: {exc}") from None
    return parse(data, source=path.name)


@functools.lru_cache(maxsize=8)
def load_cached(path: str) -> RuleParams:
    return load(path)


@functools.lru_cache(maxsize=8)
def load_dir(mappings_dir: str | Path) -> RuleParams:
    """rules.yaml of a mappings folder (Settings.HUB_MAPPINGS_DIR), read once per process.
    Cached by folder too: the drain asks once per event, and building the file's path each
    time cost more than the rule it served."""
    return load_cached(str(Path(mappings_dir) / "rules.yaml"))


def parse(data, source: str = "rules.yaml") -> RuleParams:
    """Validate a plain mapping into RuleParams."""
    return _build(RuleParams, data, source, "")


def _build(cls, data, source: str, path: str):
    where = f"{source}: {path}" if path else source
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}{'.' if path else ': '}{unknown[0]}: unknown key "
                          f"(known: {', '.join(sorted(names))})")
    values = {}
    for f in fields(cls):
        key = f"{path}.{f.name}" if path else f.name
        if f.name not in data:
            raise ConfigError(f"{source}: {key}: missing")
        values[f.name] = _value(hints[f.name], data[f.name], f.metadata, source, key)
    obj = cls(**values)
    problem = obj.check() if hasattr(obj, "check") else None
    if problem:
        raise ConfigError(f"{where}: {problem}" if path else f"{source}: {problem}")
    return obj


def _value(kind, raw, meta, source: str, key: str):
    fail = lambda what: ConfigError(f"{source}: {key}: {what}, got {raw!r}")  # noqa: E731
    if is_dataclass(kind):
        return _build(kind, raw, source, key)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Literal:
        if raw not in args:
            raise fail(f"must be one of {', '.join(args)}")
        return raw
    if origin is tuple:
        if not isinstance(raw, list):
            raise fail("must be a list")
        return tuple(_value(args[0], v, meta, source, f"{key}[{i}]") for i, v in enumerate(raw))
    if origin is dict:
        if not isinstance(raw, dict):
            raise fail("must be a mapping")
        return {_value(args[0], k, {}, source, f"{key} key"): _value(args[1], v, meta, source, f"{key}.{k}")
                for k, v in raw.items()}
    if kind is bool:
        if not isinstance(raw, bool):
            raise fail("must be true or false")
        return raw
    if kind is str:
        if not isinstance(raw, str) or not raw:
            raise fail("must be a non-empty string")
        return raw
    if kind in (int, float):
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or (kind is int and not isinstance(raw, int)):
            raise fail(f"must be {'an integer' if kind is int else 'a number'}")
        lo, hi = meta.get("min"), meta.get("max")
        if (lo is not None and raw < lo) or (hi is not None and raw > hi):
            raise fail(f"must be between {lo} and {hi if hi is not None else 'any'}")
        return kind(raw)
    raise TypeError(f"unsupported parameter type {kind!r} for {key}")  # a bug here, not in YAML
