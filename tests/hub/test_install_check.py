"""`hub install --check`: one clear line per configured tool, against loopback stand-ins."""
from __future__ import annotations

from datetime import date

from click.testing import CliRunner

from hub.commands import install
from hub.config import Settings
from hub.ops import registrations
from hub.sync.rules import params
from standins.activecampaign import FakeActiveCampaign
from standins.hubspot import FakeHubSpot
from standins.klaviyo import FakeKlaviyo
from standins.loopback import LoopbackServer
from standins.shopify import FakeShopifyAdmin
from standins.stripe import FakeStripe


class FakeStripeAccount(LoopbackServer):
    """Just GET /v1/account, with Stripe's 401 for a wrong key."""

    ROUTES = [("GET", r"/v1/account", "account")]

    def __init__(self, key: str):
        super().__init__()
        self.key = key

    def authorized(self, call):
        return call.headers.get("Authorization") == f"Bearer {self.key}"

    def error_body(self, status, message):
        return {"error": {"type": "invalid_request_error", "message": f"Invalid API Key provided: {message}"}}

    def account(self, call):
        return 200, {"id": "acct_standin", "object": "account"}


def _settings(**values) -> Settings:
    return Settings.from_env(env={}, overrides=values)


def _by_tool(settings) -> dict[str, registrations.Check]:
    return {c.tool: c for c in registrations.check_all(settings)}


def test_every_configured_tool_is_checked_and_ok():
    with FakeShopifyAdmin(token="shpat_ok") as shop, FakeStripe("sk_test_ok") as stripe_, \
            FakeKlaviyo(api_key="pk_ok") as klaviyo, FakeHubSpot(token="pat-ok") as hubspot, \
            FakeActiveCampaign(api_key="ac-ok") as ac:
        settings = _settings(
            SHOPIFY_SHOP="example.myshopify.com", SHOPIFY_ACCESS_TOKEN="shpat_ok", SHOPIFY_ADMIN_URL=shop.url,
            SHOPIFY_WEBHOOK_SECRET="shpss", STRIPE_API_KEY="sk_test_ok", STRIPE_API_BASE=stripe_.url,
            STRIPE_WEBHOOK_SECRET="whsec", KLAVIYO_API_KEY="pk_ok", KLAVIYO_BASE_URL=klaviyo.url,
            HUBSPOT_ACCESS_TOKEN="pat-ok", HUBSPOT_BASE_URL=hubspot.url,
            ACTIVECAMPAIGN_API_KEY="ac-ok", ACTIVECAMPAIGN_URL=ac.url, CHARGEBEE_SITE="acme",
            CHARGEBEE_WEBHOOK_USER="hub", CHARGEBEE_WEBHOOK_PASSWORD="pw", HUB_BASE_URL="https://hub.example.com")
        # What --check looks for: the Shopify subscriptions and the Stripe endpoint.
        assert registrations.install_shopify(settings).status == registrations.install_stripe(settings).status == "ok"
        requests_before = len(shop.requests)
        checks = _by_tool(settings)
        checked = shop.requests[requests_before:]
    assert {t: c.status for t, c in checks.items()} == {
        "Shopify": "ok", "Stripe": "ok", "Chargebee": "ok", "Recharge": "off", "Klaviyo": "ok", "HubSpot": "ok",
        "ActiveCampaign": "ok", "Dunning": "off"}, checks
    assert "2026-10" in checks["Shopify"].message  # the pinned API version is shown
    assert "acct_standin" in checks["Stripe"].message
    assert not any("mutation" in r["query"] for r in checked)  # --check changes nothing


def test_check_says_when_the_stripe_endpoint_is_missing():
    with FakeStripe("sk_test_ok") as stripe_:
        check = _by_tool(_settings(STRIPE_API_KEY="sk_test_ok", STRIPE_API_BASE=stripe_.url,
                                   STRIPE_WEBHOOK_SECRET="whsec", HUB_BASE_URL="https://hub.example.com"))["Stripe"]
    assert check.status == "wrong" and "no webhook endpoint" in check.message and "hub install" in check.message


def _installed_shopify_check(version: str) -> tuple[registrations.Check, list[dict]]:
    """`hub install` then the check, on SHOPIFY_API_VERSION=version, on 2026-12-05 at Shopify."""
    with FakeShopifyAdmin(token="shpat_ok", today=date(2026, 12, 5)) as shop:
        settings = _settings(SHOPIFY_SHOP="example.myshopify.com", SHOPIFY_ACCESS_TOKEN="shpat_ok",
                             SHOPIFY_ADMIN_URL=shop.url, SHOPIFY_WEBHOOK_SECRET="shpss",
                             SHOPIFY_API_VERSION=version, HUB_BASE_URL="https://hub.example.com")
        registrations.install_shopify(settings)
        return _by_tool(settings)["Shopify"], shop.requests


def test_an_unsupported_configured_version_is_reported_with_the_one_shopify_served():
    # 2025-07 was released on 2025-07-01: by 2026-12-05 Shopify serves its oldest supported
    # version, 2026-01, instead, and says so in X-Shopify-API-Version.
    check, requests = _installed_shopify_check("2025-07")
    assert {r["served"] for r in requests} == {"2026-01"}
    assert check.status == "wrong", check
    assert "2025-07" in check.message and "answered in 2026-01" in check.message
    assert "SHOPIFY_API_VERSION=2026-10" in check.message


def test_the_default_version_is_one_shopify_serves_today():
    check, requests = _installed_shopify_check(Settings().SHOPIFY_API_VERSION)
    assert {r["served"] for r in requests} == {"2026-10"}
    assert check.status == "ok" and "Admin API 2026-10" in check.message


def test_check_says_when_shopify_subscriptions_are_missing():
    with FakeShopifyAdmin(token="shpat_ok") as shop:
        check = _by_tool(_settings(SHOPIFY_SHOP="example.myshopify.com", SHOPIFY_ACCESS_TOKEN="shpat_ok",
                                   SHOPIFY_ADMIN_URL=shop.url, SHOPIFY_WEBHOOK_SECRET="shpss",
                                   HUB_BASE_URL="https://hub.example.com"))["Shopify"]
    assert check.status == "wrong" and "webhook subscriptions missing" in check.message
    assert "run `hub install`" in check.message


def test_a_wrong_token_gives_one_clear_line_per_tool_and_never_the_token():
    with FakeShopifyAdmin(token="shpat_ok") as shop, FakeStripeAccount("sk_test_ok") as stripe_, \
            FakeKlaviyo(api_key="pk_ok") as klaviyo, FakeHubSpot(token="pat-ok") as hubspot, \
            FakeActiveCampaign(api_key="ac-ok") as ac:
        settings = _settings(
            SHOPIFY_SHOP="example.myshopify.com", SHOPIFY_ACCESS_TOKEN="shpat_bad", SHOPIFY_ADMIN_URL=shop.url,
            SHOPIFY_WEBHOOK_SECRET="shpss", STRIPE_API_KEY="sk_test_bad", STRIPE_API_BASE=stripe_.url,
            STRIPE_WEBHOOK_SECRET="whsec", KLAVIYO_API_KEY="pk_bad", KLAVIYO_BASE_URL=klaviyo.url,
            HUBSPOT_ACCESS_TOKEN="pat-bad", HUBSPOT_BASE_URL=hubspot.url,
            ACTIVECAMPAIGN_API_KEY="ac-bad", ACTIVECAMPAIGN_URL=ac.url)
        checks = _by_tool(settings)
    for tool, setting in (("Shopify", "SHOPIFY_ACCESS_TOKEN"), ("Stripe", "STRIPE_API_KEY"),
                          ("Klaviyo", "KLAVIYO_API_KEY"), ("HubSpot", "HUBSPOT_ACCESS_TOKEN"),
                          ("ActiveCampaign", "ACTIVECAMPAIGN_API_KEY")):
        check = checks[tool]
        assert check.status == "wrong" and setting in check.message, check
        assert "\n" not in check.line()
        assert "_bad" not in check.message and "-bad" not in check.message


def test_unconfigured_tools_are_off_not_errors_and_missing_secrets_are_named():
    checks = _by_tool(_settings())
    assert all(c.status == "off" for c in checks.values()), checks
    with FakeShopifyAdmin(token="shpat_ok") as shop:
        checks = _by_tool(_settings(SHOPIFY_SHOP="example.myshopify.com", SHOPIFY_ACCESS_TOKEN="shpat_ok",
                                    SHOPIFY_ADMIN_URL=shop.url))
    assert checks["Shopify"].status == "wrong" and "SHOPIFY_WEBHOOK_SECRET" in checks["Shopify"].message


def test_hubspot_reports_missing_custom_properties():
    with FakeHubSpot(token="pat-ok", installed=False) as hubspot:
        check = _by_tool(_settings(HUBSPOT_ACCESS_TOKEN="pat-ok", HUBSPOT_BASE_URL=hubspot.url))["HubSpot"]
    assert check.status == "ok" and "hub install" in check.message


def test_the_command_prints_the_lines_and_fails_when_one_is_wrong(monkeypatch):
    monkeypatch.setattr(registrations, "check_all", lambda settings: [
        registrations.Check("HubSpot", "wrong", "HUBSPOT_ACCESS_TOKEN refused"),
        registrations.Check("Klaviyo", "off", "not configured")])
    result = CliRunner().invoke(install.command, ["--check"])
    assert result.exit_code == 1
    assert result.output.splitlines() == ["FAIL HubSpot: HUBSPOT_ACCESS_TOKEN refused",
                                          "--   Klaviyo: not configured"]


def _orchestrating(tmp_path, **values) -> Settings:
    """Settings whose mappings/rules.yaml sets dunning mode `orchestrate`."""
    rules = params.DEFAULT_PATH.read_text().replace("mode: notify ", "mode: orchestrate ")
    assert "mode: orchestrate" in rules
    (tmp_path / "rules.yaml").write_text(rules)
    return _settings(HUB_MAPPINGS_DIR=str(tmp_path), **values)


def test_dunning_line_says_the_platforms_retry_in_notify_mode():
    line = _by_tool(_settings())["Dunning"].line()
    assert line.startswith("--   Dunning: notify: the platforms retry failed payments")


def test_orchestrate_line_names_who_is_asked_who_retries_itself_and_what_to_turn_off(tmp_path):
    check = registrations.check_dunning(_orchestrating(
        tmp_path, STRIPE_API_KEY="sk_test", SHOPIFY_SHOP="example.myshopify.com", RECHARGE_API_KEY="rk"))
    assert check.status == "ok"
    assert "on days 3, 7, 14 after the first failure" in check.message
    assert "Stripe is asked to pay the open invoice" in check.message
    assert "Shopify's failed payments are retried by the store's subscription app" in check.message
    assert "Recharge retries its failed charges itself" in check.message
    assert check.message.endswith("else cards are tried on two schedules: Stripe (Billing → Revenue recovery → "
                                  "Retries)")


def test_orchestrate_fails_the_check_for_a_platform_whose_asks_miss_a_key(tmp_path):
    check = registrations.check_dunning(_orchestrating(
        tmp_path, CHARGEBEE_SITE="acme", CHARGEBEE_WEBHOOK_USER="hub", CHARGEBEE_WEBHOOK_PASSWORD="pw"))
    assert check.status == "wrong"
    assert check.message == ("orchestrate, but Chargebee's failed payments cannot be asked for: set "
                             "CHARGEBEE_API_KEY (a full-access key: collect_payment writes invoices)")
    only_recharge = registrations.check_dunning(_orchestrating(tmp_path, RECHARGE_API_KEY="rk"))
    assert only_recharge.status == "wrong" and "no platform in use can be asked" in only_recharge.message
