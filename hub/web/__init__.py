"""Blueprints, one per URL area."""
from flask import current_app
from werkzeug.routing import IntegerConverter

from hub.values import MAX_ROW_ID


class RowIdConverter(IntegerConverter):
    """`<id:name>`: a database id in a path. A larger number is a 404 here rather than an
    OverflowError from the database driver."""

    def __init__(self, url_map):
        super().__init__(url_map, max=MAX_ROW_ID)


def current_hub():
    return current_app.extensions["hub"]


def register_blueprints(app) -> None:
    from hub.web import api, health, webhooks

    app.url_map.converters["id"] = RowIdConverter
    app.wsgi_app = webhooks.WebhookApp(app.extensions["hub"], app.wsgi_app)
    app.register_blueprint(api.bp)
    app.register_blueprint(health.bp)
    try:
        from hub.web import auth, synclog
    except ImportError:  # the sync log pages land with their own issue
        return
    app.register_blueprint(auth.bp)
    app.register_blueprint(synclog.bp)
