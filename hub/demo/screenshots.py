"""README's screenshots from a running demo: `python -m hub.demo.screenshots URL EMAIL PASSWORD
SUBSCRIBER_EMAIL [OUT_DIR]` (the values `hub demo` prints).

Needs Playwright (a test dependency) and Chromium (/usr/bin/chromium, or HUB_CHROMIUM):
the subscriber page, from its top to just past the first delivery that was retried after
a 429, and the dashboard once its plots are drawn; both 1280 pixels wide.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

CHROMIUM = os.environ.get("HUB_CHROMIUM", "/usr/bin/chromium")
WIDTH = 1280


def take(url: str, email: str, password: str, subscriber: str, out: Path) -> list[Path]:
    """Log in, search `subscriber`, and save subscriber.png and dashboard.png into `out`."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - optional: a test dependency

    base = url.split("/sync-log")[0]
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        context = browser.new_context(base_url=base, viewport={"width": WIDTH, "height": 900},
                                      timezone_id="UTC", locale="en-GB")
        page = context.new_page()
        page.goto("/login")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("searchbox").fill(subscriber)
        page.keyboard.press("Enter")
        page.wait_for_url("**/sync-log/subscribers/**")
        retried = page.get_by_text("asked us to wait").first
        retried.scroll_into_view_if_needed()
        box = retried.bounding_box()
        height = page.evaluate("document.documentElement.scrollHeight")
        bottom = min(height, int(box["y"] + page.evaluate("window.scrollY") + 260)) if box else 1600
        shots = [out / "subscriber.png", out / "dashboard.png"]
        page.screenshot(path=str(shots[0]), full_page=True,
                        clip={"x": 0, "y": 0, "width": WIDTH, "height": max(900, bottom)})
        page.goto("/sync-log/dashboard")
        page.wait_for_function("document.querySelectorAll('canvas').length > 0 && "
                               "[...document.querySelectorAll('canvas')].every(c => c.width > 0)")
        page.wait_for_timeout(800)  # Chart.js animates its first drawing
        page.screenshot(path=str(shots[1]), full_page=True)
        context.close()
        browser.close()
    return shots


if __name__ == "__main__":
    if len(sys.argv) not in (5, 6):
        raise SystemExit(__doc__)
    for shot in take(*sys.argv[1:5], Path(sys.argv[5] if len(sys.argv) == 6 else "docs")):
        print(shot)
