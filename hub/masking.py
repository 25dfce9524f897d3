"""Masking: what staff pages and logs may show of a person, and what a raw body must never show.

Masking is for lists (many people on one screen, read over a shoulder); the subscriber
page shows the person's own details whole. Raw webhook bodies are shown on demand with
secrets and card data removed: they are UNTRUSTED input that may carry tokens, card
numbers or signatures, and a support page is not a place to keep those.
"""
from __future__ import annotations

import json
import logging
import re

REMOVED = "[removed]"

# Keys whose values are removed wherever they appear (compared lower-case, without
# "_", "-" or spaces): credentials, signatures and card data.
_SECRET_KEYS = frozenset({
    "password", "passwd", "pass", "secret", "clientsecret", "apikey", "apisecret", "secretkey",
    "privatekey", "accesstoken", "refreshtoken", "idtoken", "token", "authorization", "auth",
    "cookie", "setcookie", "signature", "hmac", "xshopifyhmacsha256", "stripesignature",
    "cardnumber", "pan", "cvc", "cvv", "cvc2", "cvv2", "securitycode", "exp", "expiry",
    "expmonth", "expyear", "expirymonth", "expiryyear", "expirationdate", "expdate",
    "accountnumber", "routingnumber", "iban", "ssn", "taxid",
})
# Key endings that mark a credential whatever comes before (`webhook_secret`, `cart_token`).
_SECRET_SUFFIXES = ("password", "secret", "token", "apikey", "signature", "cardnumber", "cvc", "cvv")
# Inside an object that describes a card, `number` is the card number.
_CARD_KEYS = frozenset({"card", "paymentmethod", "source", "creditcard", "paymentsource"})

# 13 to 19 digits, optionally grouped by spaces or dashes: a possible card number (checked with Luhn).
_CARD_LIKE = re.compile(r"(?<![\w.])(?:\d[ -]?){12,18}\d(?![\w.])")
EMAIL_PATTERN = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"(?<![\w])\+\d[\d ().-]{6,18}\d(?![\w])")
# A customer link's token opens that customer's billing page (hub.web.links): an access log
# line quoting the path must not hand it to whoever reads the logs.
_LINK_TOKEN = re.compile(r"(?<=/l/)[A-Za-z0-9_-]{16,}")
_KEY_VALUE = re.compile(r"(?i)\b(password|secret|token|api[_-]?key|authorization|signature|cvc|cvv)"
                        r"(\s*[=:]\s*)([^\s&,;]+)")


def mask_email(email: str | None) -> str:
    """`jenny.rosen@example.com` → `j***@example.com`: enough to tell people apart in a list."""
    if not email:
        return ""
    local, at, domain = email.partition("@")
    if not at:
        return local[:1] + "***"
    return f"{local[:1]}***@{domain}"


def mask_phone(phone: str | None) -> str:
    """`+15551234567` → `+*******4567`: only the last four digits stay."""
    if not phone:
        return ""
    digits = re.sub(r"\D", "", phone)
    if len(digits) <= 4:
        return "*" * len(digits)
    return ("+" if phone.strip().startswith("+") else "") + "*" * (len(digits) - 4) + digits[-4:]


def mask_text(text: str | None) -> str | None:
    """Free text (a tool's error message, a log line) with every email and phone number in it
    masked, and the token of every customer link."""
    if not text:
        return text
    text = EMAIL_PATTERN.sub(lambda m: mask_email(m.group(0)), text)
    text = _LINK_TOKEN.sub("[token]", text)
    return _PHONE.sub(lambda m: mask_phone(m.group(0)), text)


class MaskPersonalData(logging.Filter):
    """A log handler's filter: every email and phone number in a record's message (arguments
    included) and traceback is masked before a formatter writes it. Logs are copied to files
    and log services the hub cannot erase from, so they must not name anyone, whichever
    module or library wrote the line (an identity merge, a database error quoting its
    parameters, a tool's error text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        return True


_TRACEBACKS = logging.Formatter()


def mask_logs() -> None:
    """Put MaskPersonalData on every log handler configured so far (the root logger's and
    those of loggers that do not propagate to it); run once logging is set up."""
    loggers = [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values()
                                      if isinstance(logger, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, MaskPersonalData) for f in handler.filters):
                handler.addFilter(MaskPersonalData())


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum that every payment card number passes."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _card_number(text: str) -> bool:
    digits = re.sub(r"[ -]", "", text)
    return 13 <= len(digits) <= 19 and digits.isdigit() and luhn_valid(digits)


def normal_key(key) -> str:
    return re.sub(r"[\s_-]", "", str(key)).lower()


def secret_key(key) -> bool:
    """True when a field of this name holds a credential or card data."""
    k = normal_key(key)
    return k in _SECRET_KEYS or k.endswith(_SECRET_SUFFIXES)


def _scrub_text(text: str) -> str:
    text = _CARD_LIKE.sub(lambda m: REMOVED if _card_number(m.group(0)) else m.group(0), text)
    return _KEY_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REMOVED}", text)


def scrub_value(value, key=None, in_card: bool = False):
    """A JSON value with secrets and card data replaced by `[removed]`."""
    if key is not None and (secret_key(key) or (in_card and normal_key(key) == "number")):
        return REMOVED if value not in (None, "") else value
    if isinstance(value, dict):
        card = in_card or normal_key(key or "") in _CARD_KEYS or value.get("object") == "card"
        return {k: scrub_value(v, k, card) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_value(v, None, in_card) for v in value]
    if isinstance(value, str):
        # Ids are not card numbers even when their digits pass Luhn (Shopify ids are long numbers).
        if key is not None and normal_key(key).endswith("id"):
            return value
        return _scrub_text(value)
    return value


def scrub_body(body: bytes | str | None) -> str:
    """A raw webhook body as readable text (JSON pretty-printed) without secrets or card data."""
    if body is None:
        return ""
    if isinstance(body, (bytes, bytearray, memoryview)):
        text = bytes(body).decode("utf-8", errors="replace")
    else:
        text = body
    try:
        return json.dumps(scrub_value(json.loads(text)), indent=2, ensure_ascii=False, sort_keys=False)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than it can be walked
        return _scrub_text(text)


def scrub_headers(headers: dict | None) -> dict:
    """Stored request headers without signatures or credentials."""
    return {k: (REMOVED if secret_key(k) or "signature" in k.lower() or "hmac" in k.lower() else v)
            for k, v in (headers or {}).items()}
