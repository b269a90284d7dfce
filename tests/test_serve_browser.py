"""The web page in a real browser: Debian's Chromium driven by Playwright, against a real server.
Screenshots go to test-artifacts/browser (or $XMODAL_TEST_ARTIFACTS/browser)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from serve_helpers import running_server
from xmodal.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(os.environ.get("XMODAL_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))
KEY = "browser-test-key"


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: bash scripts/test.sh installs Debian's chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is a test dependency")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    page = context.new_page()
    page.errors = []  # console errors and uncaught exceptions, checked by the tests
    page.on("console", lambda message: page.errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    yield page
    context.close()


def screenshot(page, name: str) -> None:
    folder = ARTIFACTS / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def test_page_loads_offline_and_says_what_it_serves(page):
    with running_server(Settings()) as server:
        requested = []
        page.on("request", lambda r: requested.append(r.url))
        page.goto(server.url + "/")
        status = page.locator("#status")
        status.filter(has_text="machine learning only").wait_for(timeout=10_000)
        assert page.title() == "xmodal"
        assert page.locator("#query").is_disabled()  # no library: nothing to search yet
        assert page.locator("#version").inner_text().startswith("xmodal ")
        screenshot(page, "page-ml-only")
    assert requested and all(url.startswith(server.url) for url in requested), requested
    assert page.errors == []


def test_page_asks_for_the_key_and_signs_in(page):
    with running_server(Settings(api_key=KEY)) as server:
        page.goto(server.url + "/")
        page.locator("#login").wait_for(state="visible", timeout=10_000)
        page.fill("#api-key", "wrong")
        page.click("#login button")
        page.locator("#login-error").filter(has_text="not right").wait_for(timeout=10_000)
        screenshot(page, "page-login-refused")
        page.fill("#api-key", KEY)
        page.click("#login button")
        page.locator("#status").filter(has_text="machine learning only").wait_for(timeout=10_000)
        assert page.locator("#login").is_hidden()
        cookies = {c["name"]: c for c in page.context.cookies()}
        assert cookies["xmodal_api_key"]["httpOnly"] and cookies["xmodal_api_key"]["sameSite"] == "Strict"
        # The cookie also opens the API docs, whose assets are served locally.
        page.goto(server.url + "/docs")
        page.locator(".swagger-ui").get_by_text("/predict", exact=True).first.wait_for(timeout=20_000)
        screenshot(page, "docs")
    # 401s before signing in are answers the page handles, not errors of its own.
    assert all("401" in e or "Unauthorized" in e for e in page.errors), page.errors
