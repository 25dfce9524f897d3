"""The header reading every edge shares: the tools' answers, the platforms' webhooks, backfill."""
from __future__ import annotations

import time
from email.utils import formatdate

from requests.structures import CaseInsensitiveDict
from werkzeug.datastructures import Headers

from hub.values import header, retry_after


def test_a_header_is_found_whatever_its_casing_and_container():
    for headers in ({"x-request-id": "r-1"}, {"X-REQUEST-ID": "r-1"}, [("X-Request-Id", "r-1")],
                    Headers([("x-request-id", "r-1")]), CaseInsensitiveDict({"X-Request-ID": "r-1"})):
        assert header(headers, "X-Request-Id") == "r-1", headers
    assert header({}, "X-Request-Id") is None
    assert header(None, "X-Request-Id") is None


def test_retry_after_is_read_as_seconds_or_as_an_http_date():
    assert retry_after({"retry-after": "7"}) == 7.0
    in_a_minute = retry_after({"Retry-After": formatdate(time.time() + 60, usegmt=True)}, default=1.0)
    assert 55 <= in_a_minute <= 60
    assert retry_after({"Retry-After": formatdate(time.time() - 60, usegmt=True)}) == 0.0


def test_retry_after_falls_back_to_the_callers_default():
    assert retry_after({}) == 0.0
    assert retry_after(None, default=5.0) == 5.0
    assert retry_after({"Retry-After": "soon"}, default=5.0) == 5.0
