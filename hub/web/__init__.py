"""Blueprints, one per URL area."""
from flask import current_app
from werkzeug.routing import IntegerConverter

from hub.values import MAX_ROW_ID


class RowIdConverter(IntegerConverter):
    """`<id:name>`: a database id in a path. A larger number is a 404 here rather than an
    OverflowError from the database driver."""

    def __init__(self, url_map):
        super().__init__(url_map, max=MAX_ROW_ID)


# Sent with every page and answer. The pages load scripts, styles and Chart.js from the hub
# itself and nothing from elsewhere, so 'self' is all they need: an injected script or style
# tag, or a form posting elsewhere, is refused by the browser. frame-ancestors (and
# X-Frame-Options for older browsers) stops another site framing the staff pages to trick
# a click on Retry or Replay; Referrer-Policy keeps search terms (emails) in the URL from
# leaking to the sites the pages link to.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def security_headers(response):
    """after_request: SECURITY_HEADERS on every answer, unless a view set its own."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def current_hub():
    return current_app.extensions["hub"]
