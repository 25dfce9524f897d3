"""Blueprints, one per URL area."""
from flask import current_app


def current_hub():
    return current_app.extensions["hub"]


def register_blueprints(app) -> None:
    from hub.web import api, health, webhooks

    app.wsgi_app = webhooks.WebhookApp(app.extensions["hub"], app.wsgi_app)
    app.register_blueprint(api.bp)
    app.register_blueprint(health.bp)
    try:
        from hub.web import auth, synclog
    except ImportError:  # the sync log pages land with their own issue
        return
    app.register_blueprint(auth.bp)
    app.register_blueprint(synclog.bp)
