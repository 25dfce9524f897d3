"""A live hub on 127.0.0.1 and Debian's Chromium driven by Playwright.

Browser tests are marked `browser` and skipped, saying why, when Chromium or Playwright
is missing. HUB_SCREENSHOTS=1 also writes the README's screenshots into docs/.
"""
from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

CHROMIUM = os.environ.get("HUB_CHROMIUM", "/usr/bin/chromium")  # Debian's package
DOCS = Path(__file__).resolve().parents[2] / "docs"

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - playwright is a test dependency
    sync_playwright = None


def pytest_collection_modifyitems(config, items):
    reason = None
    if sync_playwright is None:
        reason = "the playwright package is not installed (pip install playwright)"
    elif not os.path.exists(CHROMIUM):
        reason = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    here = Path(__file__).parent
    for item in items:
        if Path(item.fspath).is_relative_to(here):
            item.add_marker(pytest.mark.browser)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def chromium():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        browser.close()


class LiveServer:
    """create_app(hub=...) served by werkzeug in a thread on a free port."""

    def __init__(self, app):
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="live-hub")

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def live(app):
    with LiveServer(app) as server:
        yield server


@pytest.fixture
def page(chromium, live):
    context = chromium.new_context(base_url=live.url, viewport={"width": 1280, "height": 900},
                                   timezone_id="UTC", locale="en-GB")
    context.set_default_timeout(15_000)
    tab = context.new_page()
    yield tab
    context.close()


@pytest.fixture
def screenshot(tmp_path):
    """Save a full-page screenshot; into docs/ too when HUB_SCREENSHOTS=1."""
    def take(page, name: str) -> Path:
        path = tmp_path / name
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000, "the screenshot looks empty"
        if os.environ.get("HUB_SCREENSHOTS") == "1":
            DOCS.mkdir(exist_ok=True)
            shutil.copy(path, DOCS / name)
        return path
    return take
