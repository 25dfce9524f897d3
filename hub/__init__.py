"""The hub: a self-hosted subscription lifecycle hub.

create_app() builds the web app; Hub bundles what every process needs
(settings, storage, queues) so workers and the CLI share one way in.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from hub.config import Settings
from hub.masking import mask_logs
from hub.queues import Queues
from hub.db.engine import Storage, create_private

__all__ = ["Hub", "Settings", "create_app", "make_hub"]


@dataclass
class Hub:
    settings: Settings
    storage: Storage
    queues: Queues


def make_hub(overrides: dict | None = None, settings: Settings | None = None) -> Hub:
    """Settings from the environment, with the database and queues they name."""
    settings = settings or Settings.from_env(overrides=overrides)
    logging.basicConfig(level=settings.HUB_LOG_LEVEL,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    mask_logs()  # no raw email or phone in any log line
    return Hub(settings=settings, storage=Storage(settings.DATABASE_URL), queues=Queues(settings))


def create_app(overrides: dict | None = None, hub: Hub | None = None):
    """The Flask app: webhooks, JSON API, health, sync log pages."""
    from flask import Flask

    from hub.sync import rules
    from hub.web import register_blueprints, security_headers

    hub = hub or make_hub(overrides)
    rules.configure(hub.settings)  # a bad mappings/rules.yaml stops the app at start (ConfigError)
    app = Flask(__name__, template_folder="web/templates", static_folder="web/static")
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
    import secrets
    from pathlib import Path

    path = Path.cwd() / ".hub-secret"
    if path.exists():
        return path.read_text().strip()
    key = secrets.token_hex(32)
    create_private(path)  # 0600 before the key is in it
    path.write_text(key)
    return key
