"""The real app under uvicorn on loopback, and headless Debian Chromium driven by Playwright.

Chromium comes from Debian (`apt-get install chromium`), never from `playwright install`: the
machines that run these tests download no browsers. Without it the browser tests are skipped,
unless S4_REQUIRE_BROWSER is set (CI sets it), in which case they fail.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from bench.servers import running_server

CHROMIUM = Path(os.environ.get("S4_CHROMIUM", "/usr/bin/chromium"))
# Headless, and quiet: the test machines have no internet, and Chromium's background services
# would otherwise keep trying (and failing) to reach Google.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1100, "height": 900}

# Inference on a CI CPU can take a moment; Playwright's default of 5 s is tight for that.
expect.set_options(timeout=15_000)


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        reason = f"no Chromium at {CHROMIUM}: apt-get install chromium (or set S4_CHROMIUM)"
        if os.environ.get("S4_REQUIRE_BROWSER"):
            pytest.fail(reason)
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="session")
def live_server(reading_weights: Path) -> Iterator[str]:
    """The real app, `uvicorn app.main:app`, on a free loopback port; its URL.

    It serves the committed weights (S4_TEST_WEIGHTS may point elsewhere while developing).
    """
    # One CPU thread: the page sends one image at a time, and CI machines are shared.
    env = {"S4_WEIGHTS": str(reading_weights), "S4_DEVICE": "cpu", "S4_CPU_THREADS": "1"}
    with running_server(env) as server:
        yield server.url


# Module scope: Playwright's sync API keeps an asyncio loop running in the main thread while it
# is open, and tests after the browser's (asyncio.run in other modules) need it closed again.
@pytest.fixture(scope="module")
def browser(chromium_path: Path) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser: Browser, live_server: str) -> Iterator:
    """``open_page(**context_options)`` opens / in a fresh browser context and returns the page.

    At teardown it checks what every page must satisfy: no uncaught script errors, and no
    request anywhere but the app itself (no CDN, no external fonts).
    """
    contexts = []
    script_errors: list[str] = []
    requested_urls: list[str] = []

    def factory(**context_options) -> Page:
        context_options.setdefault("viewport", DESKTOP)
        context = browser.new_context(base_url=live_server, **context_options)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: script_errors.append(str(error)))
        page.on("request", lambda request: requested_urls.append(request.url))
        page.goto("/")
        return page

    yield factory
    for context in contexts:
        context.close()
    assert script_errors == []
    assert [url for url in requested_urls if not url.startswith(f"{live_server}/")] == []


@pytest.fixture
def page(open_page) -> Page:
    """The page at a desktop size."""
    return open_page()
