"""`hub install` as a new user runs it: every tool's stand-in on loopback, the command from the
shell's environment, one line per tool; a second run changes nothing and says so."""
from __future__ import annotations

import shutil
from dataclasses import fields
from datetime import date

import pytest
import redis as redis_lib
import yaml
from click.testing import CliRunner

import connectors
from hub.commands import install
from hub.config import Settings
from hub.db.engine import Storage
from hub.ops import registrations
from hub.sync import compliance, outbox
from standins.activecampaign import FakeActiveCampaign
from standins.hubspot import HUB_PROPERTIES, LIFECYCLE_STAGES, FakeHubSpot
from standins.klaviyo import FakeKlaviyo
from standins.shopify import FakeShopifyAdmin
from standins.stripe import FakeStripe
from tests.connectors.conftest import PROJECT_MAPPINGS
from webhooks.shopify import api as shopify_api
from webhooks.shopify.webhook import CONTRACT_TOPICS
from webhooks.shopify.webhook import TOPICS as SHOPIFY_TOPICS
from webhooks.stripe.webhook import TOPICS as STRIPE_TYPES

HUB_URL = "https://hub.example.com"
COMPLIANCE = {"customers/data_request", "customers/redact", "shop/redact"}


class World:
    """The stand-ins of every tool and the environment that points the hub at them."""

    def __init__(self, database_url: str, activecampaign: bool = False):
        self.activecampaign = activecampaign  # set up at 5 requests a second: seconds
        self.shopify = FakeShopifyAdmin(token="shpat_ok")
        self.stripe = FakeStripe(key="sk_test_ok")
        self.klaviyo = FakeKlaviyo(api_key="pk_ok")
        self.hubspot = FakeHubSpot(token="pat-ok", installed=False)
        self.ac = FakeActiveCampaign(api_key="ac-ok")
        self.database_url = database_url

    def __enter__(self):
        self.shopify.__enter__()
        for fake in (self.stripe, self.klaviyo, self.hubspot, self.ac):
            fake.start()
        self.env = {
            "DATABASE_URL": self.database_url, "HUB_BASE_URL": HUB_URL,
            "SHOPIFY_SHOP": "example.myshopify.com", "SHOPIFY_ACCESS_TOKEN": "shpat_ok",
            "SHOPIFY_WEBHOOK_SECRET": "shpss", "SHOPIFY_ADMIN_URL": self.shopify.url,
            "STRIPE_API_KEY": "sk_test_ok", "STRIPE_API_BASE": self.stripe.url,
            "KLAVIYO_API_KEY": "pk_ok", "KLAVIYO_BASE_URL": self.klaviyo.url,
            "HUBSPOT_ACCESS_TOKEN": "pat-ok", "HUBSPOT_BASE_URL": self.hubspot.url,
        }
        if self.activecampaign:
            self.env.update(ACTIVECAMPAIGN_API_KEY="ac-ok", ACTIVECAMPAIGN_URL=self.ac.url)
        return self

    def __exit__(self, *exc):
        for fake in (self.stripe, self.klaviyo, self.hubspot, self.ac):
            fake.stop()
        self.shopify.__exit__(*exc)

    def settings(self, **changes) -> Settings:
        return Settings.from_env(env={**self.env, **changes})

    def run(self, *args, **env_changes):
        """`hub install ARGS` with the world's environment (and nothing else of this shell's)."""
        env = {f.name: None for f in fields(Settings)}
        env.update(self.env)
        env.update(env_changes)
        result = CliRunner().invoke(install.command, list(args), env=env)
        lines = {line.split(":", 1)[0].split()[-1]: line for line in result.output.splitlines()}
        return result, lines


@pytest.fixture
def world(database_url):
    with World(database_url) as w:
        yield w


@pytest.fixture
def every_tool(database_url):
    with World(database_url, activecampaign=True) as w:
        yield w


def test_a_new_user_installs_everything_and_a_second_run_changes_nothing(every_tool):
    world = every_tool
    first, lines = world.run()
    assert first.exit_code == 0, first.output
    assert len(first.output.splitlines()) == 8  # one line per tool, and the dunning mode
    assert lines["Dunning"].startswith("--   Dunning: notify")
    # Shopify: one subscription per handled topic, at the hub's URL, in the pinned version;
    # none for contracts, which another app owns (SHOPIFY_OWNS_CONTRACTS is off).
    registered = {(n["topic"], n["uri"]) for n in world.shopify.subscriptions.values()}
    wanted = {t.replace("/", "_").upper() for t in SHOPIFY_TOPICS
              if t not in COMPLIANCE and t not in CONTRACT_TOPICS}
    assert registered == {(t, f"{HUB_URL}/webhooks/shopify") for t in wanted}
    assert {r["version"] for r in world.shopify.requests} == {"2026-10"}
    assert "Admin API 2026-10" in lines["Shopify"] and f"created {len(wanted)}" in lines["Shopify"]
    # Stripe: one endpoint for the handled event types; its secret is shown once, to be kept.
    (endpoint,) = world.stripe.webhook_endpoints.values()
    assert endpoint["url"] == f"{HUB_URL}/webhooks/stripe"
    assert sorted(endpoint["enabled_events"]) == sorted(STRIPE_TYPES)
    # Why a payment failed, and the end of collection, are among them.
    assert {"payment_intent.payment_failed", "invoice.marked_uncollectible",
            "invoice.voided"} <= set(endpoint["enabled_events"])
    # Cards added and removed, for the card-expiry warnings.
    assert {"payment_method.attached", "payment_method.detached",
            "payment_method.automatically_updated"} <= set(endpoint["enabled_events"])
    assert f"STRIPE_WEBHOOK_SECRET={endpoint['secret']}" in lines["Stripe"]
    # HubSpot properties and ActiveCampaign fields and stage tags now exist.
    assert HUB_PROPERTIES <= world.hubspot.properties
    assert {f["perstag"] for f in world.ac.fields.values()} >= {p.upper() for p in HUB_PROPERTIES}
    assert {t["tag"] for t in world.ac.tags.values()} >= {"Hub stage: new", "Hub stage: churned"}
    assert world.ac.throttled == 0  # 20-odd requests, never past ActiveCampaign's 5 a second
    assert lines["Chargebee"].startswith("--") and lines["Klaviyo"].startswith("ok")

    sent = len(world.shopify.requests)
    calls_before = (len(world.shopify.subscriptions), len(world.hubspot.properties), len(world.ac.fields),
                    len(world.ac.tags))
    second, lines = world.run(STRIPE_WEBHOOK_SECRET=endpoint["secret"])
    assert second.exit_code == 0, second.output
    for tool in ("Shopify", "Stripe", "HubSpot", "ActiveCampaign"):
        assert "no change" in lines[tool], lines[tool]
    assert (len(world.shopify.subscriptions), len(world.hubspot.properties), len(world.ac.fields),
            len(world.ac.tags)) == calls_before
    assert len(world.stripe.webhook_endpoints) == 1
    second_run = world.shopify.requests[sent:]
    assert second_run and not any("mutation" in r["query"] for r in second_run)
    assert world.stripe.crashes == world.hubspot.crashes == world.ac.crashes == []


def test_registering_on_a_version_shopify_no_longer_serves_says_which_one_it_served(world):
    world.shopify.today = date(2026, 12, 5)  # 2025-07 is past its 12 months: served as 2026-01
    _, lines = world.run(SHOPIFY_API_VERSION="2025-07")
    assert lines["Shopify"].startswith("ok") and "created" in lines["Shopify"]
    assert "answered in 2026-01" in lines["Shopify"] and "SHOPIFY_API_VERSION=2026-10" in lines["Shopify"]


def test_the_stripe_endpoint_is_made_on_the_api_version_the_normalizers_read(world):
    result, lines = world.run()
    assert result.exit_code == 0, result.output
    (endpoint,) = world.stripe.webhook_endpoints.values()
    # Stripe renders this endpoint's events in 2025-03-31.basil, whatever the account's default.
    assert endpoint["api_version"] == "2025-03-31.basil"
    assert "warning" not in lines["Stripe"]


def test_an_endpoint_on_another_api_version_is_reported_and_left_as_it_is(world):
    world.stripe.webhook_endpoints["we_old"] = {
        "id": "we_old", "object": "webhook_endpoint", "api_version": "2024-06-20", "application": None,
        "created": 1700000000, "description": "made by hand", "enabled_events": ["*"], "livemode": False,
        "metadata": {}, "status": "enabled", "url": f"{HUB_URL}/webhooks/stripe", "secret": "whsec_old"}
    result, lines = world.run(STRIPE_WEBHOOK_SECRET="whsec_old")
    assert result.exit_code == 0, result.output
    assert "2024-06-20" in lines["Stripe"] and "2025-03-31.basil" in lines["Stripe"]
    assert "delete the endpoint" in lines["Stripe"]  # Stripe cannot change an endpoint's version
    assert world.stripe.webhook_endpoints["we_old"]["api_version"] == "2024-06-20"
    _, lines = world.run("--check", STRIPE_WEBHOOK_SECRET="whsec_old")
    assert "2024-06-20" in lines["Stripe"] and "2025-03-31.basil" in lines["Stripe"]


def test_a_wrong_token_gives_one_clear_line_and_a_failing_exit(world):
    result, lines = world.run(SHOPIFY_ACCESS_TOKEN="shpat_bad", STRIPE_API_KEY="sk_test_bad")
    assert result.exit_code == 1
    assert lines["Shopify"] == ("FAIL Shopify: Shopify refused the token (401): check SHOPIFY_ACCESS_TOKEN "
                                "(the Admin API access token of the app installed on example.myshopify.com)")
    assert lines["Stripe"].startswith("FAIL Stripe: STRIPE_API_KEY was refused (401)")
    assert "shpat_bad" not in result.output and "sk_test_bad" not in result.output
    assert world.shopify.subscriptions == {} and world.stripe.webhook_endpoints == {}
    assert lines["HubSpot"].startswith("ok")  # the other tools are installed all the same


def test_a_subscription_shopify_deleted_is_noticed_and_registered_again(world):
    world.run()
    world.shopify.drop_subscription("ORDERS_PAID")  # 8 failed deliveries later
    check, lines = world.run("--check", STRIPE_WEBHOOK_SECRET="whsec_kept")
    assert check.exit_code == 1
    assert "1 of" in lines["Shopify"] and "orders/paid" in lines["Shopify"] and "hub install" in lines["Shopify"]
    result, lines = world.run(STRIPE_WEBHOOK_SECRET="whsec_kept")
    assert result.exit_code == 0 and "created 1 of" in lines["Shopify"]
    assert any(n["topic"] == "ORDERS_PAID" for n in world.shopify.subscriptions.values())


def test_a_new_hub_address_repoints_the_subscriptions_and_the_endpoint(world):
    world.run(HUB_BASE_URL="https://old-hub.example.com")
    count = len(world.shopify.subscriptions)
    result, lines = world.run(STRIPE_WEBHOOK_SECRET="whsec_kept")
    assert result.exit_code == 0, result.output
    assert f"re-pointed {count} of {count}" in lines["Shopify"]
    assert {n["uri"] for n in world.shopify.subscriptions.values()} == {f"{HUB_URL}/webhooks/shopify"}
    (endpoint,) = world.stripe.webhook_endpoints.values()
    assert endpoint["url"] == f"{HUB_URL}/webhooks/stripe" and "updated webhook endpoint" in lines["Stripe"]


def test_subscriptions_are_read_across_pages(world):
    world.shopify.page_size = 4
    world.run()
    sent = len(world.shopify.requests)
    _, lines = world.run(STRIPE_WEBHOOK_SECRET="whsec_kept")
    assert "no change" in lines["Shopify"], lines["Shopify"]  # nothing on a later page was missed
    pages = [r["variables"]["after"] for r in world.shopify.requests[sent:]]
    assert pages == [None] + [str(n) for n in range(4, len(world.shopify.subscriptions), 4)]


def test_a_private_address_is_refused_before_anything_is_registered(world):
    result, lines = world.run(HUB_BASE_URL="http://127.0.0.1:8000")
    assert result.exit_code == 1
    assert "HUB_BASE_URL" in lines["Shopify"] and "HUB_BASE_URL" in lines["Stripe"]
    assert world.shopify.subscriptions == {} and world.stripe.webhook_endpoints == {}


def test_a_missing_scope_is_one_line_naming_the_refused_topics(world, monkeypatch):
    refuse = world.shopify._create

    def no_payment_methods_scope(variables):
        if variables["topic"].startswith("CUSTOMER_PAYMENT_METHODS"):
            return {"webhookSubscription": None, "userErrors": [
                {"field": ["topic"], "message": "You do not have permission to create or update webhooks "
                                                "with customer_payment_methods/create topic."}]}
        return refuse(variables)

    monkeypatch.setattr(world.shopify, "_create", no_payment_methods_scope)
    result, lines = world.run()
    assert result.exit_code == 1
    assert "3 of" in lines["Shopify"] and "customer_payment_methods/create" in lines["Shopify"]
    assert "\n" not in lines["Shopify"]


def test_after_app_uninstalled_nothing_is_sent_to_shopify_until_reinstalled(world):
    storage = Storage(world.database_url)
    with storage.session() as session:
        compliance.record_uninstalled(session, "example.myshopify.com")
    storage.dispose()
    result, lines = world.run()
    assert result.exit_code == 1
    assert "uninstalled" in lines["Shopify"] and "--reinstalled" in lines["Shopify"]
    assert world.shopify.requests == []  # not one call: no registration, no token check
    # The contract fetch of a late subscription webhook is skipped as well.
    settings = world.settings()
    assert not shopify_api.is_configured(settings)
    with pytest.raises(shopify_api.ShopifyUninstalled):
        shopify_api.fetch_contract(settings, 1)
    assert world.shopify.requests == []

    result, lines = world.run("--reinstalled", STRIPE_WEBHOOK_SECRET="whsec_kept")
    assert result.exit_code == 0, result.output
    assert "created" in lines["Shopify"] and world.shopify.subscriptions
    # What came meanwhile, applied by its ids alone, is read whole by reconciliation.
    assert "`hub reconcile --source shopify` runs one now" in result.output


def test_install_through_the_client_credentials_grant(world):
    world.env.pop("SHOPIFY_ACCESS_TOKEN")
    result, lines = world.run(SHOPIFY_CLIENT_ID="client-test", SHOPIFY_CLIENT_SECRET="secret-test")
    assert result.exit_code == 0, result.output
    assert "created" in lines["Shopify"]
    assert world.shopify.grants >= 1
    tokens = {r["headers"].get("x-shopify-access-token") for r in world.shopify.requests if r["version"]}
    assert tokens <= set(world.shopify.granted)

    result, lines = world.run(SHOPIFY_CLIENT_ID="client-test", SHOPIFY_CLIENT_SECRET="wrong")
    assert result.exit_code == 1
    assert "client-credentials grant (401)" in lines["Shopify"] and "SHOPIFY_CLIENT_SECRET" in lines["Shopify"]
    assert "wrong" not in lines["Shopify"]


# --- the client-credentials token: cached, shared, renewed ----------------------------------

@pytest.fixture
def granting(monkeypatch):
    """A Shopify stand-in that only grants tokens (and holds contract 1 to fetch), settings
    without an access token, and a clock the test moves."""
    now = [1000.0]
    monkeypatch.setattr(shopify_api, "_clock", lambda: now[0])
    with FakeShopifyAdmin(token=None, owns_contracts=True).hold("gid://shopify/SubscriptionContract/1") as admin:
        settings = Settings.from_env(env={}, overrides={
            "SHOPIFY_SHOP": "example.myshopify.com", "SHOPIFY_ADMIN_URL": admin.url,
            "SHOPIFY_CLIENT_ID": admin.client_id, "SHOPIFY_CLIENT_SECRET": admin.client_secret})
        yield admin, settings, now


def test_a_granted_token_is_shared_by_every_caller_until_near_its_expiry(granting):
    admin, settings, now = granting
    shopify_api.fetch_contract(settings, 1)  # the worker's contract fetch
    shopify_api.subscriptions(settings)  # `hub install`
    assert admin.grants == 1
    token = shopify_api.cached_token(settings)
    assert token.expires_at == 1000.0 + 86399
    now[0] = token.expires_at - shopify_api.RENEW_BEFORE_SECONDS + 1  # five minutes before expiry
    shopify_api.fetch_contract(settings, 1)
    assert admin.grants == 2
    used = [r["headers"]["x-shopify-access-token"] for r in admin.requests if r["version"]]
    assert used == ["shpat_granted_1", "shpat_granted_1", "shpat_granted_2"]


def test_a_token_refused_early_is_renewed_once(granting):
    admin, settings, _ = granting
    shopify_api.fetch_contract(settings, 1)
    admin.expire_tokens()  # Shopify revoked it (rotated secret, reinstall)
    assert shopify_api.fetch_contract(settings, 1)["status"] == "ACTIVE"
    assert admin.grants == 2

    admin.expire_tokens()
    admin.token_lifetime = 0  # every new token is refused as well: no loop, one clear error
    with pytest.raises(shopify_api.ShopifyAPIError, match="HTTP 401") as refused:
        shopify_api.fetch_contract(settings, 1)
    assert refused.value.status == 401 and admin.grants == 3


def test_contract_topics_are_registered_only_when_the_hubs_app_owns_the_contracts(world):
    refused, lines = world.run(SHOPIFY_OWNS_CONTRACTS="1")
    # Shopify refuses contract topics to an app without the protected scope.
    assert "refused" in lines["Shopify"] and "read_own_subscription_contracts" in lines["Shopify"]

    world.shopify.own_contracts()  # Shopify approved the scopes
    done, lines = world.run(SHOPIFY_OWNS_CONTRACTS="1")
    registered = {n["topic"] for n in world.shopify.subscriptions.values()}
    assert {t.replace("/", "_").upper() for t in CONTRACT_TOPICS} <= registered
    assert "protected scopes Shopify must approve" in lines["Shopify"]
    checked = world.run("--check", SHOPIFY_OWNS_CONTRACTS="1")[1]["Shopify"]
    assert f"{len(registered)} webhook subscriptions" in checked and "missing" not in checked


def test_activecampaign_busy_with_the_running_hub_s_pushes_is_waited_for_not_failed(every_tool):
    # The account's 5 requests a second are shared with requests this command cannot count
    # (another app's, or a hub's whose Redis does not answer): ActiveCampaign refuses two
    # requests and asks for a second's pause.
    every_tool.ac.set_up(HUB_PROPERTIES)  # the fields made by an earlier run; the stage tags are not
    every_tool.ac.fail(429, retry_after=1, times=2)
    check = registrations.install_activecampaign(every_tool.settings())
    assert check.status == registrations.OK, check.message
    assert "created" in check.message and {t["tag"] for t in every_tool.ac.tags.values()} >= {"Hub stage: new"}
    assert [c.status for c in every_tool.ac.calls[:3]] == [429, 429, 200]  # each waited for, then asked again
    assert every_tool.ac.throttled == 0  # and its own requests kept to the limit


def test_beside_a_running_hub_the_install_waits_in_its_workers_windows_and_meets_no_429(every_tool, redis_server):
    redis = redis_lib.Redis.from_url(redis_server.url)
    redis.flushdb()
    every_tool.ac.set_up(HUB_PROPERTIES)
    # The running hub's workers have just spent this second's 5 ActiveCampaign requests,
    # each counted in their Redis window as it went out.
    workers = connectors.build("activecampaign", every_tool.settings(REDIS_URL=redis_server.url),
                               outbox.limiter_for(redis))
    try:
        assert all(workers._request("GET", "/fields", params={"limit": 1})[1] is not None for _ in range(5))
    finally:
        workers.close()
    check = registrations.install_activecampaign(every_tool.settings(REDIS_URL=redis_server.url))
    assert check.status == registrations.OK, check.message
    assert "created" in check.message
    assert [c.status for c in every_tool.ac.calls].count(429) == 0 and every_tool.ac.throttled == 0


def test_a_hubspot_plan_that_allows_more_is_told_how_to_use_it(database_url):
    world = World(database_url)
    world.hubspot = FakeHubSpot(token="pat-ok", installed=False, burst=190)  # Professional
    with world:
        result, lines = world.run()
    assert result.exit_code == 0, result.output
    assert lines["HubSpot"].startswith("ok")
    assert ("HubSpot allows this app 190 requests per 10 s and the hub keeps to 100 requests per 10 s: "
            'set rate_limits: {api: "190/10s"} in mappings/hubspot.yaml') in lines["HubSpot"]


def test_a_lifecycle_stage_the_hubspot_account_does_not_have_fails_the_check(database_url):
    world = World(database_url)
    # An account that edited its stages and has no "evangelist", which mappings/hubspot.yaml
    # sends for loyal customers: HubSpot would refuse every batch carrying one.
    stages = {value: label for value, label in LIFECYCLE_STAGES.items() if value != "evangelist"}
    world.hubspot = FakeHubSpot(token="pat-ok", installed=False, lifecycle_stages=stages)
    with world:
        result, lines = world.run("--check")
    assert result.exit_code != 0
    assert lines["HubSpot"].startswith("FAIL")
    assert ("mappings/hubspot.yaml sends lifecycle stage evangelist, which this HubSpot account does not "
            "have") in lines["HubSpot"]
    assert "(subscriber, lead, marketingqualifiedlead, salesqualifiedlead, opportunity, customer, other)" in (
        lines["HubSpot"])


def test_a_hubspot_pace_above_what_hubspot_allows_fails_the_check(world, tmp_path):
    mappings = tmp_path / "mappings"
    shutil.copytree(PROJECT_MAPPINGS, mappings)
    hubspot = yaml.safe_load((mappings / "hubspot.yaml").read_text())
    (mappings / "hubspot.yaml").write_text(yaml.safe_dump({**hubspot, "rate_limits": {"api": "190/10s"}}))
    result, lines = world.run("--check", HUB_MAPPINGS_DIR=str(mappings))
    assert result.exit_code != 0
    assert lines["HubSpot"].startswith("FAIL")
    assert ("HubSpot allows this app 100 requests per 10 s, not the 190 requests per 10 s of "
            'mappings/hubspot.yaml: set rate_limits: {api: "100/10s"} there') in lines["HubSpot"]
