"""What each tool needs registered, checked and made: one line per tool (ok / what is wrong /
how to fix it). `hub install --check` reports (check_all), `hub install` also registers
(install_all, and a second run says "no change"), and the hourly job records the webhook
registrations that went missing (watch) for the dashboard.

- Shopify: webhook subscriptions (Admin GraphQL `webhookSubscriptionCreate` with `uri`) for
  every topic the hub handles, at HUB_BASE_URL/webhooks/shopify, in SHOPIFY_API_VERSION;
  ones Shopify deleted after failed deliveries are made again. The compliance topics are
  set on the app in the Dev Dashboard, not through the API. Contract and billing-attempt
  topics only with SHOPIFY_OWNS_CONTRACTS: Shopify sends them to the app owning the contracts.
- Stripe: one webhook endpoint for the event types the hub handles.
- Chargebee: no registration through the API; the line says what to set in Chargebee.
- Recharge (when RECHARGE_API_KEY is set): one webhook per topic the hub handles
  (`POST /webhooks`), at HUB_BASE_URL/webhooks/recharge.
- HubSpot: the property group and custom contact properties of mappings/hubspot.yaml;
  ActiveCampaign: the custom fields and stage tags of mappings/activecampaign.yaml.
- Dunning: in mode `orchestrate`, which platforms are asked to charge again, which retry on
  their own, and any setting the asks still need (no call made).

Each check makes one cheap authenticated read (Shopify `shop { name }`, Stripe
`GET /v1/account`, Klaviyo `GET /api/accounts`, HubSpot contact properties,
ActiveCampaign `GET /api/3/fields`). A tool whose settings are empty is reported as
"not configured" and is not an error. After Shopify's app/uninstalled nothing is sent to
Shopify until `hub install --reinstalled`.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import stripe

import connectors
from connectors.activecampaign import ActiveCampaignConnector
from connectors.hubspot import HubSpotConnector
from connectors.klaviyo import KlaviyoConnector, _unvalidated
from hub.config import Settings
from hub.models import Checkpoint
from hub.ops.dashboard import REGISTRATIONS
from hub.queues import running_redis
from hub.sync import outbox, retries, rules
from webhooks import SOURCES
from webhooks.recharge import api as recharge_api
from webhooks.recharge.webhook import TOPICS as RECHARGE_TOPICS
from webhooks.shopify import api as shopify_api
from webhooks.shopify.webhook import CONTRACT_TOPICS as SHOPIFY_CONTRACT_TOPICS
from webhooks.shopify.webhook import TOPICS as SHOPIFY_TOPICS
from webhooks.stripe import api as stripe_api

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


def webhook_url(settings, source: str) -> str:
    """Where a platform posts the hub's webhooks: HUB_BASE_URL/webhooks/<source>."""
    return f"{settings.HUB_BASE_URL.rstrip('/')}/webhooks/{source}"


def _public_url_problem(settings) -> str | None:
    if not settings.HUB_BASE_URL.startswith("https://"):
        return (f"HUB_BASE_URL is {settings.HUB_BASE_URL}: webhooks need the hub's public https "
                "address, e.g. HUB_BASE_URL=https://hub.example.com")
    return None


# What `hub install` says when the hub's app owns the contracts: their scopes are protected.
CONTRACT_SCOPES_NOTE = ("contracts: the app needs read_own_subscription_contracts and "
                        "write_own_subscription_contracts, protected scopes Shopify must approve "
                        "(request them for the app in the Partner Dashboard or Dev Dashboard)")


def shopify_topics(settings) -> list[str]:
    """The Shopify topics the hub handles and registers: all but the compliance ones, and
    the contract ones only when the hub's app owns the contracts (else Shopify sends them
    to the subscription app, and refuses them to the hub)."""
    return [t for t in SHOPIFY_TOPICS if t not in shopify_api.COMPLIANCE_TOPICS
            and (settings.SHOPIFY_OWNS_CONTRACTS or t not in SHOPIFY_CONTRACT_TOPICS)]


def _shopify_blocked(settings) -> Check | None:
    """The line when Shopify cannot be called at all (off, no credentials, uninstalled)."""
    if not settings.SHOPIFY_SHOP:
        return Check("Shopify", OFF, "not configured (set SHOPIFY_SHOP=your-shop.myshopify.com)")
    if not shopify_api.has_credentials(settings):
        return Check("Shopify", WRONG, "no credentials: set SHOPIFY_ACCESS_TOKEN, or SHOPIFY_CLIENT_ID and "
                     "SHOPIFY_CLIENT_SECRET of the app made in Shopify's Dev Dashboard")
    held = shopify_api.uninstalled(settings)
    if held is not None:
        return Check("Shopify", WRONG, f"the app was uninstalled (app/uninstalled, {str(held.get('at', '?'))[:10]}): "
                     "nothing is synced or registered; data is kept until shop/redact. After installing "
                     "the app again, run `hub install --reinstalled`")
    return None


def _shopify_refused(settings, exc) -> Check:
    version = settings.SHOPIFY_API_VERSION
    if exc.status in (401, 403) and "client-credentials" in str(exc):
        return Check("Shopify", WRONG, f"Shopify refused the client-credentials grant ({exc.status}): check "
                     "SHOPIFY_CLIENT_ID and SHOPIFY_CLIENT_SECRET (Dev Dashboard → app → Settings) and that "
                     f"the app is installed on {settings.SHOPIFY_SHOP}")
    if exc.status in (401, 403):
        setting = "SHOPIFY_ACCESS_TOKEN" if settings.SHOPIFY_ACCESS_TOKEN else \
            "SHOPIFY_CLIENT_ID/SHOPIFY_CLIENT_SECRET"
        return Check("Shopify", WRONG, f"Shopify refused the token ({exc.status}): check {setting} "
                     f"(the Admin API access token of the app installed on {settings.SHOPIFY_SHOP})")
    return Check("Shopify", WRONG, f"{exc} (API version {version}; check SHOPIFY_SHOP and SHOPIFY_API_VERSION)")


def _shop_name(settings, served: dict | None = None) -> str:
    data = shopify_api.execute(settings, "query HubCheck { shop { name } }", served=served)
    return (data.get("shop") or {}).get("name") or settings.SHOPIFY_SHOP


def _version_problem(settings, served: str | None) -> str | None:
    """Why the configured Admin API version is not the one Shopify served, if it is not.

    Shopify serves a version it no longer supports as the oldest supported one and names it in
    X-Shopify-API-Version (https://shopify.dev/docs/api/usage/versioning); the hub then reads
    shapes it did not ask for (order line items name their selling plan only from 2026-10)."""
    version = settings.SHOPIFY_API_VERSION
    if not served or served == version:
        return None
    return (f"Shopify no longer serves Admin API {version} and answered in {served}: set "
            f"SHOPIFY_API_VERSION={Settings.SHOPIFY_API_VERSION} (the version the hub is written for)")


def check_shopify(settings) -> Check:
    blocked = _shopify_blocked(settings)
    if blocked is not None:
        return blocked
    version, served = settings.SHOPIFY_API_VERSION, {}
    try:
        name = _shop_name(settings, served)
        if not settings.SHOPIFY_WEBHOOK_SECRET:
            return Check("Shopify", WRONG, "token ok but no webhook secret: set SHOPIFY_WEBHOOK_SECRET "
                         "(or SHOPIFY_CLIENT_SECRET), else every webhook is refused")
        problem = _public_url_problem(settings)
        if problem:
            return Check("Shopify", WRONG, f"token ok; {problem}")
        problem = _version_problem(settings, served.get("api_version"))
        if problem:
            return Check("Shopify", WRONG, f"shop {name!r}: {problem}")
        topics = shopify_topics(settings)
        plan = shopify_api.plan_subscriptions(shopify_api.subscriptions(settings), topics,
                                              webhook_url(settings, "shopify"))
    except shopify_api.ShopifyAPIError as exc:
        return _shopify_refused(settings, exc)
    missing = plan.create + [t for _, t in plan.update]
    if missing:
        # Shopify deletes an API-made subscription after 8 failed deliveries (4 hours).
        return Check("Shopify", WRONG, f"shop {name!r}, Admin API {version}: {len(missing)} of {len(topics)} "
                     f"webhook subscriptions missing or elsewhere ({', '.join(missing[:3])}"
                     f"{'…' if len(missing) > 3 else ''}): run `hub install`")
    return Check("Shopify", OK, f"shop {name!r}, Admin API {version}, {len(topics)} webhook subscriptions")


def _stripe_refused(exc) -> Check:
    if isinstance(exc, stripe.AuthenticationError):
        return Check("Stripe", WRONG, "STRIPE_API_KEY was refused (401): copy a secret or restricted "
                     "key from Dashboard → Developers → API keys")
    if isinstance(exc, stripe.PermissionError):
        return Check("Stripe", WRONG, "STRIPE_API_KEY lacks a permission (403): give the restricted key "
                     "Webhook Endpoints write and read access to customers, subscriptions and invoices")
    return Check("Stripe", WRONG, f"Stripe did not answer: {exc.user_message or exc}")


def check_stripe(settings) -> Check:
    if not settings.STRIPE_API_KEY:
        return Check("Stripe", OFF, "not configured (set STRIPE_API_KEY=sk_… or rk_…)")
    client = stripe_api.client(settings)
    try:
        account = client.v1.accounts.retrieve_current()
    except stripe.StripeError as exc:
        return _stripe_refused(exc)
    if not settings.STRIPE_WEBHOOK_SECRET:
        return Check("Stripe", WRONG, "key ok but STRIPE_WEBHOOK_SECRET is empty: copy the signing "
                     "secret (whsec_…) of the webhook endpoint, else every webhook is refused")
    if _public_url_problem(settings) is None:
        url = webhook_url(settings, "stripe")
        try:
            endpoints = [e.to_dict() for e in
                         client.v1.webhook_endpoints.list({"limit": 100}).auto_paging_iter()]
        except stripe.StripeError as exc:
            return _stripe_refused(exc)
        action, ours, changes = stripe_api.plan_endpoint(endpoints, url, stripe_api.event_types())
        if action != "unchanged":
            what = "no webhook endpoint" if action == "create" else f"the endpoint needs {', '.join(changes)}"
            return Check("Stripe", WRONG, f"account {account.id}: {what} for {url}: run `hub install`")
        note = stripe_api.version_note(ours.get("api_version"))
        if note:  # the normalizers read other versions' shapes too: a warning, not a failure
            return Check("Stripe", OK, f"account {account.id}, webhook endpoint {ours['id']} in place; "
                         f"warning: {note}")
    return Check("Stripe", OK, f"account {account.id}, webhook endpoint in place")


def check_chargebee(settings) -> Check:
    if not settings.CHARGEBEE_SITE:
        return Check("Chargebee", OFF, "not configured (set CHARGEBEE_SITE, CHARGEBEE_WEBHOOK_USER and "
                     "CHARGEBEE_WEBHOOK_PASSWORD)")
    if not (settings.CHARGEBEE_WEBHOOK_USER and settings.CHARGEBEE_WEBHOOK_PASSWORD):
        return Check("Chargebee", WRONG, "set CHARGEBEE_WEBHOOK_USER and CHARGEBEE_WEBHOOK_PASSWORD (the "
                     "basic auth Chargebee sends), else every Chargebee webhook is refused")
    return Check("Chargebee", OK, f"site {settings.CHARGEBEE_SITE}, webhook basic auth set")


def _recharge_blocked(settings, registering: bool = False) -> Check | None:
    """The line when Recharge cannot be checked or, `registering`, registered with (off, no
    secret, no public URL for its webhooks)."""
    if not settings.RECHARGE_API_KEY:
        return Check("Recharge", OFF, "not configured (set RECHARGE_API_KEY and RECHARGE_WEBHOOK_SECRET)")
    if not settings.RECHARGE_WEBHOOK_SECRET:
        return Check("Recharge", WRONG, "set RECHARGE_WEBHOOK_SECRET (the API client secret of the token's app: "
                     "Recharge signs webhooks with it), else every Recharge webhook is refused")
    problem = _public_url_problem(settings) if registering else None
    return Check("Recharge", WRONG, problem) if problem else None


def _recharge_refused(exc) -> Check:
    if _refused(exc.status):
        return Check("Recharge", WRONG, f"RECHARGE_API_KEY refused (HTTP {exc.status}): create an Admin API token "
                     "(Recharge → Tools and apps → API tokens) that reads customers, subscriptions and "
                     "charges and has write_webhooks")
    return Check("Recharge", WRONG, f"Recharge did not answer as expected: {exc}")


def _recharge_plan(settings) -> tuple[recharge_api.Client, recharge_api.WebhookPlan, str]:
    client = recharge_api.Client(settings, retries=2)
    url = webhook_url(settings, "recharge")
    return client, recharge_api.plan_webhooks(client.webhooks(), RECHARGE_TOPICS, url), url


def check_recharge(settings) -> Check:
    blocked = _recharge_blocked(settings)
    if blocked is not None:
        return blocked
    try:
        _, plan, url = _recharge_plan(settings)
    except recharge_api.RechargeAPIError as exc:
        return _recharge_refused(exc)
    problem = _public_url_problem(settings)
    if problem:
        return Check("Recharge", WRONG, f"token ok; {problem}")
    missing = plan.create + [topic for _, topic in plan.repoint]
    if missing:
        # "Recharge's system will attempt to send the same webhook 20 times over 48 hours ... If the
        # request fails each time ... we will delete this webhook" (https://docs.getrecharge.com/docs/webhooks-overview).
        return Check("Recharge", WRONG, f"{len(missing)} of {len(RECHARGE_TOPICS)} webhooks missing or elsewhere "
                     f"({_names(missing)}): run `hub install`")
    return Check("Recharge", OK, f"token ok, {len(RECHARGE_TOPICS)} webhooks at {url}")


# How long a check or install waits out a tool's 429s in all (ActiveCampaign's Retry-After
# may ask for half a minute): the tool may count requests this process cannot see.
INSTALL_PATIENCE_S = 120.0


def _connector(settings, name):
    """The tool's connector. Its limit is the account's, shared with the running hub's pushes:
    while that hub's Redis answers, the check and the install take their places in the
    workers' windows (and keep to any pause a 429 set there), so neither meets a 429 on the
    other's account; without it, this process's own limiter paces them."""
    connector = connectors.build(name, settings, outbox.limiter_for(running_redis(settings)))
    connector.patience = INSTALL_PATIENCE_S
    return connector


def check_klaviyo(settings) -> Check:
    if KlaviyoConnector.missing_settings(settings):
        return Check("Klaviyo", OFF, "not configured (set KLAVIYO_API_KEY=pk_…)")
    connector = _connector(settings, "klaviyo")
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
    check, connector = _hubspot_account(settings)
    return check if connector is None else _with_pace(check, connector)


def _hubspot_account(settings) -> tuple[Check, HubSpotConnector | None]:
    """The token and the custom properties; the connector that asked when the token works."""
    if HubSpotConnector.missing_settings(settings):
        return Check("HubSpot", OFF, "not configured (set HUBSPOT_ACCESS_TOKEN=pat-…)"), None
    connector = _connector(settings, "hubspot")
    result, body = connector._call(connector.properties.get_all, object_type="contacts")
    if body is None:
        if _refused(result.http_status):
            return Check("HubSpot", WRONG, f"HUBSPOT_ACCESS_TOKEN refused (HTTP {result.http_status}): "
                         "use the private app's access token with crm.objects.contacts.read/write "
                         "and crm.schemas.contacts.read/write scopes"), None
        return Check("HubSpot", WRONG, f"HubSpot answered: {result.message}"), None
    existing = {p.get("name") for p in body.get("results", [])}
    unknown = _unknown_lifecycle_stages(connector.mapping, body.get("results", []))
    if unknown:
        return Check("HubSpot", WRONG, unknown), None
    missing = sorted(p for p in connector.mapping["fields"].values() if p and p not in existing)
    if missing:
        return Check("HubSpot", OK, f"token ok; {len(missing)} custom propert"
                     f"{'y' if len(missing) == 1 else 'ies'} missing ({', '.join(missing[:3])}…): "
                     "run `hub install` to create them"), connector
    return Check("HubSpot", OK, "token ok, custom properties present"), connector


def _unknown_lifecycle_stages(mapping: dict, properties: list[dict]) -> str | None:
    """What to fix when mappings/hubspot.yaml sends a lifecycle stage the account does not have:
    HubSpot refuses the whole batch for it (INVALID_OPTION), and an account can edit its stages."""
    stage = next((p for p in properties if p.get("name") == "lifecyclestage"), None)
    if not stage or not stage.get("options") or not mapping["lifecycle_stages"]:
        return None
    values = [o.get("value") for o in stage["options"]]
    unknown = sorted({v for v in mapping["lifecycle_stages"].values() if v and v not in values})
    if not unknown:
        return None
    return (f"token ok; mappings/hubspot.yaml sends lifecycle stage{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(unknown)}, which this HubSpot account does not have, and HubSpot refuses every "
            f"batch that carries one: map lifecycle_stages to the internal values of its stages "
            f"({', '.join(values)}), or empty lifecycle_stages")


def _per(rate) -> str:
    return f"{rate.requests} requests per {rate.seconds:g} s"


def _with_pace(check: Check, connector) -> Check:
    """The line with the pace the hub keeps to for HubSpot against the limit HubSpot's answers
    gave this app: a plan above Starter allows more, which the mapping must name to use."""
    allowed, kept = connector.allowed, connector.kept_rate()
    if allowed is None or kept.per_second == allowed.per_second:
        return check
    wanted = f'rate_limits: {{api: "{allowed.requests}/{allowed.seconds:g}s"}}'
    if kept.per_second > allowed.per_second:
        return Check(check.tool, WRONG, f"{check.message}; but HubSpot allows this app {_per(allowed)}, "
                     f"not the {_per(kept)} of mappings/hubspot.yaml: set {wanted} there, or its "
                     "pushes meet 429s")
    return Check(check.tool, check.status, f"{check.message}; HubSpot allows this app {_per(allowed)} "
                 f"and the hub keeps to {_per(kept)}: set {wanted} in mappings/hubspot.yaml to use them")


def check_activecampaign(settings) -> Check:
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


def check_dunning(settings) -> Check:
    """Dunning mode, and in `orchestrate` what each platform in use does with a failed payment."""
    dunning = rules.current_params(settings).dunning
    if dunning.mode != "orchestrate":
        return Check("Dunning", OFF, "notify: the platforms retry failed payments and the hub follows their "
                     "schedules (set dunning.mode: orchestrate in mappings/rules.yaml to have it ask them)")
    setups = retries.setups(settings)
    missing = [setup.words for setup in setups.values() if setup.missing]
    if missing:
        return Check("Dunning", WRONG, f"orchestrate, but {'; '.join(missing)}")
    asked = [name for name, setup in setups.items() if setup.asked]
    if not asked:
        said = "; ".join(setup.words for setup in setups.values()) or "no billing platform is configured"
        return Check("Dunning", WRONG, f"orchestrate, but no platform in use can be asked to charge again: {said}")
    days = ", ".join(str(d) for d in dunning.retries())
    when = (f"on days {days} after the first failure" if days else
            "on no retry day (dunning.retry_days, max_attempts and window_days leave none)")
    own = [f"{name.capitalize()} ({SOURCES[name].own_retries})" for name in asked if SOURCES[name].own_retries]
    turn_off = (f". Turn off the platforms' own retries, else cards are tried on two schedules: {', '.join(own)}"
                if own else "")
    return Check("Dunning", OK, f"orchestrate, {when}: "
                 f"{'; '.join(setup.words for setup in setups.values())}{turn_off}")


CHECKS = (check_shopify, check_stripe, check_chargebee, check_recharge, check_klaviyo, check_hubspot,
          check_activecampaign, check_dunning)
# The sources whose registrations can vanish on their side.
WATCHED = (check_shopify, check_stripe, check_recharge)
_NAMES = {"shopify": "Shopify", "stripe": "Stripe", "chargebee": "Chargebee", "recharge": "Recharge",
          "klaviyo": "Klaviyo", "hubspot": "HubSpot", "activecampaign": "ActiveCampaign", "dunning": "Dunning"}


def _each(steps, settings) -> list[Check]:
    found = []
    for step in steps:
        tool = _NAMES[step.__name__.split("_", 1)[1]]
        try:
            found.append(step(settings))
        except Exception as exc:  # one broken tool must not hide the others' lines
            found.append(Check(tool, WRONG, f"{step.__name__.split('_')[0]} failed: {type(exc).__name__}: {exc}"))
    return found


def watch_registrations(settings) -> list[dict]:
    """The webhook registrations (Shopify subscriptions, Stripe endpoint, Recharge webhooks) missing now.

    Shopify deletes a subscription after 8 failed deliveries; the dashboard shows what this finds.
    """
    return [{"tool": c.tool, "message": c.message} for c in _each(WATCHED, settings) if c.status == WRONG]


def record_watch(storage, settings) -> list[dict]:
    """watch_registrations(settings), kept where the dashboard reads it; the problems found."""
    problems = watch_registrations(settings)
    with storage.session() as session:
        session.merge(Checkpoint(name=REGISTRATIONS, value={
            "checked_at": datetime.now(timezone.utc).isoformat(), "problems": problems}))
        session.commit()
    return problems


def check_all(settings) -> list[Check]:
    """Every tool's check; a check that crashes is reported as that tool's failure."""
    return _each(CHECKS, settings)


# --- registration (`hub install` without --check) -------------------------------------------

def _names(items: list[str], limit: int = 3) -> str:
    return ", ".join(items[:limit]) + ("…" if len(items) > limit else "")


def install_shopify(settings) -> Check:
    """Create the missing webhook subscriptions and point ours at HUB_BASE_URL."""
    blocked = _shopify_blocked(settings)
    if blocked is not None:
        return blocked
    problem = _public_url_problem(settings)
    if problem:
        return Check("Shopify", WRONG, problem)
    version, uri, topics = settings.SHOPIFY_API_VERSION, webhook_url(settings, "shopify"), shopify_topics(settings)
    refused: dict[str, list[str]] = {}  # Shopify's message → topics (a missing scope refuses several)
    served: dict = {}
    try:
        plan = shopify_api.plan_subscriptions(shopify_api.subscriptions(settings, served), topics, uri)
        for topic in plan.create:
            try:
                shopify_api.create_subscription(settings, topic, uri)
            except shopify_api.ShopifyAPIError as exc:
                if exc.status is not None:
                    raise
                refused.setdefault(str(exc).removeprefix(f"{topic}: "), []).append(topic)
        for subscription_id, topic in plan.update:
            shopify_api.update_subscription(settings, subscription_id, topic, uri)
    except shopify_api.ShopifyAPIError as exc:
        return _shopify_refused(settings, exc)
    check = _shopify_registered(plan, refused, version, uri, len(topics))
    problem = _version_problem(settings, served.get("api_version"))
    if problem and check.status == OK:  # registered all the same, in the version Shopify served
        check.message += f"; warning: {problem}"
    if settings.SHOPIFY_OWNS_CONTRACTS:
        check.message += f"; {CONTRACT_SCOPES_NOTE}"
    return check


def _shopify_registered(plan, refused: dict[str, list[str]], version: str, uri: str, topics: int) -> Check:
    """The line for what registration did with the webhook subscriptions."""
    if refused:
        message, failed = next(iter(refused.items()))
        count = sum(len(t) for t in refused.values())
        return Check("Shopify", WRONG, f"Admin API {version}: {count} of {topics} topics refused "
                     f"({_names(failed)}: {message}); give the app the scopes in docs/install.md and run again")
    created = len(plan.create)
    if not created and not plan.update:
        return Check("Shopify", OK, f"no change: {topics} webhook subscriptions at {uri} (Admin API {version})")
    done = [f"created {created}"] if created else []
    done += [f"re-pointed {len(plan.update)}"] if plan.update else []
    return Check("Shopify", OK, f"{', '.join(done)} of {topics} webhook subscriptions at {uri} "
                 f"(Admin API {version}); compliance webhooks: set {uri} on the app in the Dev Dashboard")


def install_stripe(settings) -> Check:
    """Create or fix the hub's webhook endpoint; say where its signing secret goes."""
    if not settings.STRIPE_API_KEY:
        return Check("Stripe", OFF, "not configured (set STRIPE_API_KEY=sk_… or rk_…)")
    problem = _public_url_problem(settings)
    if problem:
        return Check("Stripe", WRONG, problem)
    url = webhook_url(settings, "stripe")
    try:
        change = stripe_api.register_endpoint(settings, url)
    except stripe.StripeError as exc:
        return _stripe_refused(exc)
    events = len(stripe_api.event_types())
    check = _stripe_registered(settings, change, url, events)
    note = stripe_api.version_note(change.api_version)
    if note and check.status == OK:  # the normalizers read other versions' shapes too: a warning
        check.message += f"; warning: {note}"
    return check


def _stripe_registered(settings, change, url: str, events: int) -> Check:
    """The line for what registration did with the endpoint (created, updated or unchanged)."""
    if change.action == "created":
        # Stripe returns the secret in this answer only: the user must keep it now.
        return Check("Stripe", OK, f"created webhook endpoint {change.endpoint_id} ({events} event types) at "
                     f"{url}; set STRIPE_WEBHOOK_SECRET={change.secret} (Stripe shows it only now)")
    where = "Dashboard → Developers → Webhooks → the endpoint → Signing secret"
    if change.action == "updated":
        note = "" if settings.STRIPE_WEBHOOK_SECRET else f"; copy its signing secret from {where} into " \
                                                          "STRIPE_WEBHOOK_SECRET"
        return Check("Stripe", OK, f"updated webhook endpoint {change.endpoint_id} ({', '.join(change.changed)}) "
                     f"to {url}, its signing secret is unchanged{note}")
    if not settings.STRIPE_WEBHOOK_SECRET:
        return Check("Stripe", WRONG, f"endpoint {change.endpoint_id} exists but STRIPE_WEBHOOK_SECRET is empty; "
                     f"Stripe's API cannot show it again: copy it from {where}")
    return Check("Stripe", OK, f"no change: webhook endpoint {change.endpoint_id} at {url} ({events} event types)")


def install_chargebee(settings) -> Check:
    """Chargebee's webhooks are set in its web app: the line says what to enter."""
    check = check_chargebee(settings)
    if check.status != OK:
        return check
    return Check("Chargebee", OK, f"set by hand (nothing to register): Settings → Configure Chargebee → "
                 f"Webhooks → Add webhook, URL {webhook_url(settings, 'chargebee')}, basic auth "
                 "CHARGEBEE_WEBHOOK_USER / CHARGEBEE_WEBHOOK_PASSWORD, API version v2")


def install_recharge(settings) -> Check:
    """Make a webhook for every topic the hub handles and move the hub's ones to HUB_BASE_URL."""
    blocked = _recharge_blocked(settings, registering=True)
    if blocked is not None:
        return blocked
    try:
        client, plan, url = _recharge_plan(settings)
        for topic in plan.create:
            client.create_webhook(url, topic)
        for webhook_id, _ in plan.repoint:
            client.point_webhook(webhook_id, url)
    except recharge_api.RechargeAPIError as exc:
        return _recharge_refused(exc)
    topics = len(RECHARGE_TOPICS)
    if not plan.create and not plan.repoint:
        return Check("Recharge", OK, f"no change: {topics} webhooks at {url}")
    done = [f"created {len(plan.create)}"] if plan.create else []
    done += [f"re-pointed {len(plan.repoint)}"] if plan.repoint else []
    return Check("Recharge", OK, f"{', '.join(done)} of {topics} webhooks at {url}")


def install_klaviyo(settings) -> Check:
    """Klaviyo takes profile properties as they come: nothing to create."""
    check = check_klaviyo(settings)
    if check.status == OK:
        check.message += "; no change (profile properties need no set-up)"
    return check


def _created_line(tool: str, created: list[str], present: str) -> Check:
    if not created:
        return Check(tool, OK, f"no change: {present}")
    return Check(tool, OK, f"created {len(created)}: {_names(created, 4)}")


def install_hubspot(settings) -> Check:
    """The property group and custom contact properties of mappings/hubspot.yaml."""
    check, connector = _hubspot_account(settings)
    if check.status != OK:
        return check
    try:
        created = connector.install()
    except RuntimeError as exc:
        return Check("HubSpot", WRONG, str(exc))
    return _with_pace(_created_line(
        "HubSpot", created, f"property group {connector.mapping['property_group']!r} and "
        f"{len([p for p in connector.mapping['fields'].values() if p])} custom properties present"), connector)


def install_activecampaign(settings) -> Check:
    """The custom fields and stage tags of mappings/activecampaign.yaml."""
    check = check_activecampaign(settings)
    if check.status != OK:
        return check
    connector = _connector(settings, "activecampaign")
    try:
        created = connector.install()
    except RuntimeError as exc:
        return Check("ActiveCampaign", WRONG, str(exc))
    finally:
        connector.close()
    fields = len([f for f in connector.mapping["fields"].values() if f])
    return _created_line("ActiveCampaign", created, f"{fields} custom fields and the stage tags present")


# Dunning needs nothing registered: `hub install` says what --check says.
INSTALLS = (install_shopify, install_stripe, install_chargebee, install_recharge, install_klaviyo,
            install_hubspot, install_activecampaign, check_dunning)


def install_all(settings) -> list[Check]:
    """Register with every configured tool; a step that crashes is reported as that tool's failure."""
    return _each(INSTALLS, settings)
