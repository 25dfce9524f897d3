"""`hub install --check`: one line per configured tool: ok, or what is wrong and how to fix it.

Only the credential check of issue 6 item 1 is here so far; registering webhooks and
creating the tools' fields (the rest of `hub install`) are still to come, so `hub install`
without `--check` says so and runs the check.

Each check makes one cheap authenticated read (Shopify `shop { name }`, Stripe
`GET /v1/account`, Klaviyo `GET /api/accounts`, HubSpot contact properties,
ActiveCampaign `GET /api/3/fields`). A tool whose settings are empty is reported as
"not configured" and is not an error.
"""
from __future__ import annotations

from dataclasses import dataclass

import click

OK, WRONG, OFF = "ok", "wrong", "off"


@dataclass
class Check:
    tool: str
    status: str  # ok | wrong | off
    message: str

    def line(self) -> str:
        mark = {OK: "ok  ", WRONG: "FAIL", OFF: "--  "}[self.status]
        return f"{mark} {self.tool}: {self.message}"


def _refused(status: int | None) -> bool:
    return status in (401, 403)


def check_shopify(settings) -> Check:
    from webhooks import shopify_api

    if not settings.SHOPIFY_SHOP:
        return Check("Shopify", OFF, "not configured (set SHOPIFY_SHOP=your-shop.myshopify.com)")
    if not settings.SHOPIFY_ACCESS_TOKEN:
        if settings.SHOPIFY_CLIENT_ID and settings.SHOPIFY_CLIENT_SECRET:
            return Check("Shopify", WRONG, "SHOPIFY_CLIENT_ID/SECRET are set but the client-credentials "
                         "grant is not built yet: set SHOPIFY_ACCESS_TOKEN (Admin API access token)")
        return Check("Shopify", WRONG, "no credentials: set SHOPIFY_ACCESS_TOKEN, or SHOPIFY_CLIENT_ID and "
                     "SHOPIFY_CLIENT_SECRET of the app made in Shopify's Dev Dashboard")
    version = settings.SHOPIFY_API_VERSION
    try:
        data = shopify_api.execute(settings, "query HubCheck { shop { name } }")
    except shopify_api.ShopifyAPIError as exc:
        text = str(exc)
        if "HTTP 401" in text or "HTTP 403" in text:
            return Check("Shopify", WRONG, f"{settings.SHOPIFY_SHOP} refused SHOPIFY_ACCESS_TOKEN "
                         "(HTTP 401/403): copy the Admin API access token of the app again")
        return Check("Shopify", WRONG, f"{text} (API version {version}; check SHOPIFY_SHOP and "
                     "SHOPIFY_API_VERSION)")
    if not settings.SHOPIFY_WEBHOOK_SECRET:
        return Check("Shopify", WRONG, "token ok but no webhook secret: set SHOPIFY_WEBHOOK_SECRET "
                     "(or SHOPIFY_CLIENT_SECRET), else every webhook is refused")
    name = (data.get("shop") or {}).get("name") or settings.SHOPIFY_SHOP
    return Check("Shopify", OK, f"shop {name!r}, Admin API {version}")


def check_stripe(settings) -> Check:
    import stripe

    if not settings.STRIPE_API_KEY:
        return Check("Stripe", OFF, "not configured (set STRIPE_API_KEY=sk_… or rk_…)")
    options = {"base_addresses": {"api": settings.STRIPE_API_BASE.rstrip("/")}} \
        if settings.STRIPE_API_BASE else {}
    client = stripe.StripeClient(settings.STRIPE_API_KEY, max_network_retries=0, **options)
    try:
        account = client.v1.accounts.retrieve_current()
    except stripe.AuthenticationError:
        return Check("Stripe", WRONG, "STRIPE_API_KEY was refused (401): copy a secret or restricted "
                     "key from Dashboard → Developers → API keys")
    except stripe.PermissionError:
        return Check("Stripe", WRONG, "STRIPE_API_KEY lacks a permission (403): give the restricted "
                     "key read access to the account, customers, subscriptions and invoices")
    except stripe.StripeError as exc:
        return Check("Stripe", WRONG, f"Stripe did not answer: {exc.user_message or exc}")
    if not settings.STRIPE_WEBHOOK_SECRET:
        return Check("Stripe", WRONG, "key ok but STRIPE_WEBHOOK_SECRET is empty: copy the signing "
                     "secret (whsec_…) of the webhook endpoint, else every webhook is refused")
    return Check("Stripe", OK, f"account {account.id}")


def _connector(settings, name):
    import connectors

    return connectors.build(name, settings)


def check_klaviyo(settings) -> Check:
    from connectors.klaviyo import KlaviyoConnector

    if KlaviyoConnector.missing_settings(settings):
        return Check("Klaviyo", OFF, "not configured (set KLAVIYO_API_KEY=pk_…)")
    connector = _connector(settings, "klaviyo")
    from connectors.klaviyo import _unvalidated

    connector.methods["accounts"] = _unvalidated(connector.api.Accounts.get_accounts_with_http_info)
    result, _ = connector._call("accounts")
    if result.outcome == "sent":
        return Check("Klaviyo", OK, "private API key accepted")
    if _refused(result.http_status):
        return Check("Klaviyo", WRONG, f"KLAVIYO_API_KEY refused (HTTP {result.http_status}): create a "
                     "private key with full access to profiles, events, lists, subscriptions and "
                     "data privacy in Settings → API keys")
    return Check("Klaviyo", WRONG, f"Klaviyo answered: {result.message}")


def check_hubspot(settings) -> Check:
    from connectors.hubspot import HubSpotConnector

    if HubSpotConnector.missing_settings(settings):
        return Check("HubSpot", OFF, "not configured (set HUBSPOT_ACCESS_TOKEN=pat-…)")
    connector = _connector(settings, "hubspot")
    result, body = connector._call(connector.properties.get_all, object_type="contacts")
    if body is None:
        if _refused(result.http_status):
            return Check("HubSpot", WRONG, f"HUBSPOT_ACCESS_TOKEN refused (HTTP {result.http_status}): "
                         "use the private app's access token with crm.objects.contacts.read/write "
                         "and crm.schemas.contacts.read/write scopes")
        return Check("HubSpot", WRONG, f"HubSpot answered: {result.message}")
    existing = {p.get("name") for p in body.get("results", [])}
    missing = sorted(p for p in connector.mapping["fields"].values() if p and p not in existing)
    if missing:
        return Check("HubSpot", OK, f"token ok; {len(missing)} custom propert"
                     f"{'y' if len(missing) == 1 else 'ies'} missing ({', '.join(missing[:3])}…): "
                     "run `hub install` to create them")
    return Check("HubSpot", OK, "token ok, custom properties present")


def check_activecampaign(settings) -> Check:
    from connectors.activecampaign import ActiveCampaignConnector

    if ActiveCampaignConnector.missing_settings(settings):
        return Check("ActiveCampaign", OFF, "not configured (set ACTIVECAMPAIGN_URL and "
                     "ACTIVECAMPAIGN_API_KEY)")
    connector = _connector(settings, "activecampaign")
    try:
        result, body = connector._request("GET", "/fields", params={"limit": 1})
    finally:
        connector.close()
    if body is not None:
        return Check("ActiveCampaign", OK, f"API key accepted at {settings.ACTIVECAMPAIGN_URL}")
    if _refused(result.http_status):
        return Check("ActiveCampaign", WRONG, f"ACTIVECAMPAIGN_API_KEY refused (HTTP {result.http_status}): "
                     "copy it from Settings → Developer, with the matching ACTIVECAMPAIGN_URL")
    return Check("ActiveCampaign", WRONG, f"ActiveCampaign answered: {result.message} "
                 "(check ACTIVECAMPAIGN_URL, e.g. https://youraccount.api-us1.com)")


CHECKS = (check_shopify, check_stripe, check_klaviyo, check_hubspot, check_activecampaign)
_NAMES = {"shopify": "Shopify", "stripe": "Stripe", "klaviyo": "Klaviyo", "hubspot": "HubSpot",
          "activecampaign": "ActiveCampaign"}


def check_all(settings) -> list[Check]:
    """Every tool's check; a check that crashes is reported as that tool's failure."""
    found = []
    for check in CHECKS:
        tool = _NAMES[check.__name__.removeprefix("check_")]
        try:
            found.append(check(settings))
        except Exception as exc:  # one broken check must not hide the others' lines
            found.append(Check(tool, WRONG, f"check failed: {type(exc).__name__}: {exc}"))
    return found


@click.command("install")
@click.option("--check", "check_only", is_flag=True, help="Only report on each credential.")
def command(check_only):
    """Check every configured credential (registration comes later)."""
    from hub.config import Settings

    settings = Settings.from_env()
    if not check_only:
        click.echo("hub install: webhook registration and field creation are not built yet; "
                   "checking credentials only.")
    results = check_all(settings)
    for result in results:
        click.echo(result.line())
    if any(r.status == WRONG for r in results):
        raise SystemExit(1)
