"""One world per connector: its loopback stand-in, settings pointing at it, sample deliveries."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from connectors import CONNECTORS, build
from connectors.base import Outgoing
from hub.config import Settings
from standins.activecampaign import FakeActiveCampaign
from standins.hubspot import FakeHubSpot
from standins.klaviyo import FakeKlaviyo
from standins.loopback import LoopbackServer
from standins.receiver import WebhookReceiver

SECRET = "sk-very-secret-4242"

# connector → (stand-in, settings pointing at it, the tool's usual 4xx)
WORLDS = {
    "klaviyo": (lambda: FakeKlaviyo(api_key=SECRET),
                lambda url: {"KLAVIYO_API_KEY": SECRET, "KLAVIYO_BASE_URL": url}, 400),
    "hubspot": (lambda: FakeHubSpot(token=SECRET),
                lambda url: {"HUBSPOT_ACCESS_TOKEN": SECRET, "HUBSPOT_BASE_URL": url}, 400),
    "activecampaign": (lambda: FakeActiveCampaign(api_key=SECRET),
                       lambda url: {"ACTIVECAMPAIGN_API_KEY": SECRET, "ACTIVECAMPAIGN_URL": url}, 422),
    "webhook": (lambda: WebhookReceiver(secret=SECRET),
                lambda url: {"OUTBOUND_WEBHOOK_SECRET": SECRET, "OUTBOUND_WEBHOOK_URL": url + "/hooks"}, 400),
}

# Mapping keys a tool needs before it takes every kind of delivery: ids of the stand-in's objects.
MAPPINGS = {"hubspot": {"subscription_id": FakeHubSpot.MARKETING}, "activecampaign": {"list_id": "1"}}
PROJECT_MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"


def profile_item(delivery_id: int = 1, email: str = "ada@example.com", **fields) -> Outgoing:
    values = {"stage": "engaged", "health_score": 72, "tier": "Silver", "points": 120,
              "subscription_status": "active", "plan": "Coffee monthly", "mrr": 2500,
              "next_renewal_at": "2026-12-01T12:00:00+00:00", "lifetime_value": 15000, **fields}
    return Outgoing(delivery_id, "profile", f"profile:{delivery_id}", {
        "subscriber_id": delivery_id, "email": email, "phone": f"+1613555{delivery_id % 10000:04d}",
        "first_name": "Ada", "last_name": "Lovelace", "fields": values})


def event_item(delivery_id: int = 2, email: str = "ada@example.com", subscriber_id: int = 1,
               name: str = "Renewal Reminder", key: str | None = None, history: bool = False) -> Outgoing:
    key = key or f"{subscriber_id}:renewal-7d:2026-12-01"
    return Outgoing(delivery_id, "event", key, {
        "subscriber_id": subscriber_id, "email": email, "phone": None, "name": name,
        "properties": {"days_before": 7, "plan": "Coffee monthly", "amount": 2500, "currency": "USD"},
        "time": "2026-11-24T12:00:00+00:00", "unique_id": key, "history": history})


def consent_item(delivery_id: int = 3, email: str = "ada@example.com", state: str = "subscribed",
                 channel: str = "email", phone: str | None = None, history: bool = False) -> Outgoing:
    return Outgoing(delivery_id, "consent", f"consent:{delivery_id}", {
        "subscriber_id": delivery_id, "email": email, "phone": phone, "channel": channel, "state": state,
        "consented_at": "2026-10-01T09:30:00+00:00", "source": "shopify", "history": history})


def erase_item(delivery_id: int = 4, email: str = "ada@example.com", phone: str | None = "+16135550004"
               ) -> Outgoing:
    return Outgoing(delivery_id, "erase", f"erase:{delivery_id}", {
        "subscriber_id": delivery_id, "email": email, "phone": phone, "subject": "0" * 64})


SAMPLES = {"profile": profile_item, "event": event_item, "consent": consent_item, "erase": erase_item}


@dataclass
class World:
    name: str
    fake: LoopbackServer
    settings: Settings
    client_error: int

    def connector(self, limiter=None, timeout: float | None = None):
        connector = build(self.name, self.settings, limiter)
        if timeout is not None:
            connector.timeout = timeout
        return connector

    def items(self) -> list[Outgoing]:
        return [SAMPLES[kind]() for kind in CONNECTORS[self.name].kinds]


def check(fake: LoopbackServer) -> None:
    """After a test: the stand-in did not crash and (Klaviyo) every request matched its schema."""
    assert fake.crashes == []
    assert getattr(fake, "invalid", []) == []


def make_world(name: str, mappings: Path, installed: bool = True, **overrides) -> tuple[World, LoopbackServer]:
    """The tool's stand-in, and settings whose mappings folder holds the project's mapping of
    it with the ids (MAPPINGS) of that stand-in. `installed`: ActiveCampaign's account has the
    mapped custom fields, as `hub install` leaves it (else the first profile makes them, some
    twenty requests at its 5 a second)."""
    make_fake, make_settings, client_error = WORLDS[name]
    fake = make_fake().start()
    mapping = yaml.safe_load((PROJECT_MAPPINGS / f"{name}.yaml").read_text()) or {}
    if installed and isinstance(fake, FakeActiveCampaign):
        fake.set_up(mapping["fields"].values())
    (mappings / f"{name}.yaml").write_text(yaml.safe_dump({**mapping, **MAPPINGS.get(name, {})}))
    settings = Settings.from_env(env={}, overrides={**make_settings(fake.url), "HUB_MAPPINGS_DIR": str(mappings),
                                                    **overrides})
    return World(name, fake, settings, client_error), fake


@pytest.fixture(params=sorted(WORLDS))
def world(request, tmp_path):
    world, fake = make_world(request.param, tmp_path)
    yield world
    fake.stop()
    check(fake)


@pytest.fixture
def klaviyo(tmp_path):
    world, fake = make_world("klaviyo", tmp_path)
    yield world
    fake.stop()
    check(fake)


@pytest.fixture
def hubspot(tmp_path):
    world, fake = make_world("hubspot", tmp_path)
    yield world
    fake.stop()
    check(fake)


@pytest.fixture
def activecampaign(tmp_path):
    world, fake = make_world("activecampaign", tmp_path)
    yield world
    fake.stop()
    check(fake)


@pytest.fixture
def new_activecampaign(tmp_path):
    """An ActiveCampaign account without the hub's custom fields yet."""
    world, fake = make_world("activecampaign", tmp_path, installed=False)
    yield world
    fake.stop()
    check(fake)


@pytest.fixture
def webhook(tmp_path):
    world, fake = make_world("webhook", tmp_path)
    yield world
    fake.stop()
    check(fake)
