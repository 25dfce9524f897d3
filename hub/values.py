"""Small value types and parsers shared by normalizers and the model: pure functions."""
from __future__ import annotations

import json
import re
import time
from calendar import monthrange
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime

import orjson

# ISO 4217 currencies whose minor unit is not the cent.
_ZERO_DECIMAL = {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX",
                 "VND", "VUV", "XAF", "XOF", "XPF", "ISK", "HUF", "TWD"}
_THREE_DECIMAL = {"BHD", "JOD", "KWD", "OMR", "TND", "IQD", "LYD"}


def minor_exponent(currency: str) -> int:
    """Digits after the decimal point of a currency's minor unit."""
    code = currency.upper()
    return 0 if code in _ZERO_DECIMAL else 3 if code in _THREE_DECIMAL else 2


@dataclass(frozen=True)
class Money:
    """An amount in integer minor units with its ISO currency (upper case)."""

    amount: int
    currency: str

    def __post_init__(self):
        if not isinstance(self.amount, int) or isinstance(self.amount, bool):
            raise TypeError(f"Money amount must be an int of minor units, got {self.amount!r}")
        if not re.fullmatch(r"[A-Z]{3}", self.currency or ""):
            raise ValueError(f"Money currency must be a 3-letter ISO code, got {self.currency!r}")

    @classmethod
    def from_decimal(cls, value: str | int | float | Decimal, currency: str) -> "Money":
        """Money from a decimal string such as Shopify's "19.99"."""
        try:
            dec = Decimal(str(value))
        except InvalidOperation as exc:
            raise ValueError(f"not a decimal amount: {value!r}") from exc
        code = currency.upper()
        return cls(int((dec * (10 ** minor_exponent(code))).to_integral_value()), code)

    @classmethod
    def from_minor(cls, value: int | str, currency: str) -> "Money":
        """Money from minor units such as Stripe's 1999."""
        return cls(int(value), currency.upper())

    def to_decimal(self) -> Decimal:
        return Decimal(self.amount) / (10 ** minor_exponent(self.currency))

    def __str__(self) -> str:
        return f"{self.to_decimal():.{minor_exponent(self.currency)}f} {self.currency}"


def money_text(amount, currency: str | None) -> str | None:
    """`54.00 USD` for 5400 minor units of `usd`; None when the amount or currency is unknown."""
    if amount is None or isinstance(amount, bool) or not currency:
        return None
    try:
        return str(Money(int(amount), str(currency).upper()))
    except (TypeError, ValueError):
        return None


# Intervals per month, to normalize a price to a monthly one (MRR).
_PER_MONTH = {"day": 365 / 12, "week": 52 / 12, "month": 1.0, "year": 1 / 12}


def per_month(amount, interval: str | None, count: int | None) -> int:
    """A price of `amount` minor units every `count` `interval`s, per month (0 when unknown)."""
    rate = _PER_MONTH.get(interval or "month")
    if not amount or rate is None:
        return 0
    return round(amount * rate / max(1, count or 1))


def plan_unknown(plan, plan_id, amount) -> bool:
    """No plan name, plan id or price: a subscription known by its ids alone (a Shopify contract
    webhook applied by what it carries), or a record that says no more."""
    return plan is None and plan_id is None and amount is None


def add_intervals(at: datetime, interval: str, count: int, day: int | None = None) -> datetime:
    """`at` plus `count` intervals; months keep the day of month (or `day`, a billing anchor's
    day that a short month had capped), capped at the month's last."""
    if interval in ("day", "week"):
        return at + timedelta(**{f"{interval}s": count})
    months = count * (12 if interval == "year" else 1)
    year, month = divmod(at.year * 12 + at.month - 1 + months, 12)
    month += 1
    return at.replace(year=year, month=month, day=min(day or at.day, monthrange(year, month)[1]))


def normalize_email(value: str | None) -> str | None:
    """Trimmed, lower-cased email, or None when empty or not an address."""
    if not value:
        return None
    email = value.strip().lower()
    return email if "@" in email else None


def normalize_phone(value: str | None, default_country_code: str = "1") -> str | None:
    """Phone in E.164 (`+15551234567`), or None when it has too few digits."""
    if not value:
        return None
    raw = value.strip()
    digits = re.sub(r"\D", "", raw)
    if raw.startswith("00"):
        digits = digits[2:]
    elif not raw.startswith("+"):
        if len(digits) == 10:
            digits = default_country_code + digits
    if not 8 <= len(digits) <= 15:
        return None
    return "+" + digits


# The largest id every id column holds: subscriber ids are INTEGER, 32 bits on PostgreSQL
# (a larger number makes the driver raise "out of range", not find nothing); the BIGINT ids
# of the inbox and the outbox reach it only after two billion rows.
MAX_ROW_ID = 2**31 - 1


def row_id(value) -> int | None:
    """A database id from text or an int, or None when it cannot be one: only ASCII digits
    count (`"²³".isdigit()` is true, yet int() refuses it) and only up to MAX_ROW_ID (a larger
    number makes the database driver raise, not find nothing)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        if not (value.isascii() and value.isdigit() and len(value) <= 10):
            return None
        value = int(value)
    return value if isinstance(value, int) and 0 <= value <= MAX_ROW_ID else None


def utc(value) -> datetime | None:
    """A UTC-aware datetime from ISO-8601 text, a Unix timestamp or a datetime; None stays None.
    Raises ValueError or TypeError for anything else, timestamps beyond the calendar
    (`1e400`, 20 digits) included."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    if isinstance(value, (int, float)) or (isinstance(value, str) and value.isascii() and value.isdigit()):
        try:
            return datetime.fromtimestamp(int(value), tz=timezone.utc)
        except (OverflowError, OSError):  # inf, or a year past 9999
            raise ValueError(f"timestamp out of range: {str(value)[:40]}") from None
    if isinstance(value, (dict, list)):  # str() of a deeply nested one would recurse
        raise TypeError(f"not a time: a {type(value).__name__}")
    text = str(value).strip().replace("Z", "+00:00")
    parsed = datetime.fromisoformat(text)
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


def readable_utc(value) -> datetime | None:
    """utc(value), or None where it is no readable time: a webhook's envelope is stored
    whatever its time says (the normalizers, which need the time, fail the row instead)."""
    try:
        return utc(value)
    except (TypeError, ValueError):
        return None


def iso(value: datetime | None) -> str | None:
    """ISO-8601 text of a datetime in UTC, or None."""
    return utc(value).isoformat() if value is not None else None


def json_text(value) -> str:
    """JSON columns' text, by orjson (the drain writes several per row); what it cannot
    encode (an integer beyond 64 bits) goes through the standard library as before."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value)


# orjson reads an integer beyond 64 bits as a float, silently. Any such integer has 19
# digits or more; text holding a run of 19 digits goes to the standard library instead
# (found with a byte translation and a substring search: a regular expression took
# longer than the parse it guards).
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19


def json_value(text: str | bytes):
    """Parse JSON text exactly as the standard library does, by orjson where that is the
    same (about twice as fast): the standard library parses long numbers,
    NaN and the rest orjson refuses."""
    try:
        raw = text.encode() if isinstance(text, str) else text
    except UnicodeEncodeError:  # a lone surrogate in the text: the standard library's to read
        return json.loads(text)
    if _LONG_RUN not in raw.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def header(headers, name: str) -> str | None:
    """A header by case-insensitive name, from werkzeug, requests or urllib3 headers, a plain
    dict of any casing, or a list of (name, value) pairs; None when absent."""
    if headers is None:
        return None
    try:
        found = headers.get(name)
    except AttributeError:  # (name, value) pairs
        headers = dict(headers)
        found = headers.get(name)
    if found is None:
        found = headers.get(name.lower())
    if found is not None:
        return found
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


# 408 and 425 are the server asking to be asked again, like 429 and every 5xx.
_AGAIN_STATUSES = frozenset({408, 425, 429})


def asks_again(status: int | None) -> bool:
    """Whether an HTTP status is the server's own trouble or pace rather than a refusal, so
    the same request may succeed later: 408, 425, 429 and any 5xx."""
    return status is not None and (status in _AGAIN_STATUSES or status >= 500)


def retry_after(headers, default: float = 0.0) -> float:
    """Seconds a Retry-After header asks to wait (delta-seconds or an HTTP date, RFC 9110
    10.2.3); `default` when the header is absent or unreadable."""
    value = header(headers, "Retry-After")
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return default
