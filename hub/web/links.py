"""GET /l/<token>: the stable links the hub puts in triggers (emails, SMS).

No login: the customer clicks from their inbox, days or weeks after the trigger. The token
is random and names a `customer_link` row (hub.models.link); the platform's page (a Stripe
portal session, Shopify's account page) is made now, because such sessions expire within
minutes of being made, and the customer is sent there with a 303. Whatever goes wrong gets a
plain page: an unknown, forged or expired token says only that the link is no longer valid
(nothing about whether it ever existed), a platform that cannot answer says "try again later".
"""
from __future__ import annotations

import logging
import re
from datetime import timedelta

from flask import Blueprint, redirect, render_template, request
from sqlalchemy import select

from hub.models import CustomerLink, LinkClick, now_utc
from hub.models.link import EXPIRED, PLATFORM_FAILED, REDIRECTED
from hub.web import current_hub
from webhooks import SOURCES

log = logging.getLogger(__name__)

bp = Blueprint("links", __name__)

# What secrets.token_urlsafe makes; anything else is answered without a query.
TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")


def _page_name(source: str) -> str | None:
    """What a hub link of this source lands on ("Stripe portal"), for the timeline."""
    found = SOURCES.get(source)
    return found.page_name if found is not None else None


def _customer_page_url(settings, link: CustomerLink) -> str | None:
    """The platform's page for the link's customer and purpose, made now (None: the source
    is not configured). Platform failures raise, for the caller to answer "try again later"."""
    found = SOURCES.get(link.source)
    if found is None or found.customer_page is None or not link.customer_id:
        return None
    return found.customer_page(settings, link.customer_id, link.purpose, link.subscription_id)


def _page(status: int, title: str, message: str):
    return render_template("link.html", title=title, message=message), status


def _gone(status: int):
    return _page(status, "This link is no longer valid",
                 "This link is no longer valid. Please use the link in a more recent message from us, "
                 "or sign in to your account on our site.")


@bp.get("/l/<token>")
def follow(token: str):
    if request.method == "HEAD":
        # Link checkers and previews ask HEAD: no platform session, no click on the timeline.
        return "", 200
    hub = current_hub()
    if not TOKEN.fullmatch(token):
        return _gone(404)
    with hub.storage.session() as session:
        link = session.scalar(select(CustomerLink).where(CustomerLink.token == token))
        if link is None:
            return _gone(404)
        click = LinkClick(link_id=link.id, subscriber_id=link.subscriber_id, purpose=link.purpose,
                          source=link.source, page=_page_name(link.source), clicked_at=now_utc())
        session.add(click)
        if click.clicked_at - link.created_at > timedelta(days=hub.settings.HUB_LINK_TTL_DAYS):
            click.outcome = EXPIRED
            return _gone(410)
        try:
            url = _customer_page_url(hub.settings, link)
        except Exception as exc:  # noqa: BLE001 - any platform failure: the customer may retry
            log.warning("link %s: %s could not make the customer's page: %s", link.id, link.source,
                        type(exc).__name__)
            url = None
        if not url:
            click.outcome = PLATFORM_FAILED
            return _page(503, "Please try again later",
                         "We could not open your account page just now. Please try again in a few minutes.")
        click.outcome = REDIRECTED
    return redirect(url, code=303)
