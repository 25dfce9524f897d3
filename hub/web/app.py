"""The Flask app: webhooks, JSON API, health, sync log pages."""
from __future__ import annotations

import secrets
from pathlib import Path

from flask import Flask

from hub.context import Hub, make_hub
from hub.db.engine import create_private
from hub.sync import rules
from hub.web import RowIdConverter, api, auth, health, links, security_headers, synclog, webhooks

HERE = Path(__file__).resolve().parent


def create_app(overrides: dict | None = None, hub: Hub | None = None):
    """The Flask app: webhooks, JSON API, health, sync log pages."""
    hub = hub or make_hub(overrides)
    rules.configure(hub.settings)  # a bad mappings/rules.yaml stops the app at start (ConfigError)
    app = Flask("hub", template_folder=str(HERE / "templates"), static_folder=str(HERE / "static"))
    app.config["MAX_CONTENT_LENGTH"] = hub.settings.HUB_MAX_BODY_BYTES
    app.config["SECRET_KEY"] = hub.settings.HUB_SECRET_KEY or _local_secret_key()
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SESSION_COOKIE_SECURE"] = hub.settings.HUB_BASE_URL.startswith("https://")
    app.extensions["hub"] = hub
    register_blueprints(app)
    app.after_request(security_headers)
    return app


def _local_secret_key() -> str:
    """A per-install session key kept in `.hub-secret`, so sessions survive restarts."""
    path = Path.cwd() / ".hub-secret"
    if path.exists():
        return path.read_text().strip()
    key = secrets.token_hex(32)
    create_private(path)  # 0600 before the key is in it
    path.write_text(key)
    return key


def register_blueprints(app) -> None:
    app.url_map.converters["id"] = RowIdConverter
    app.wsgi_app = webhooks.WebhookApp(app.extensions["hub"], app.wsgi_app)
    app.register_blueprint(api.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(links.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(synclog.bp)
    auth.init_app(app)
    # Bearer token, no cookie: a forged cross-site request has nothing to ride on.
    auth.csrf.exempt(api.bp)
