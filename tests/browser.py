"""A real browser for tests: Debian's chromium-headless-shell driven by playwright
(executable_path; playwright never downloads a browser here)."""
import contextlib
import shutil

import pytest

CHROMIUM_CANDIDATES = ("chromium-headless-shell", "chromium", "chromium-browser")


def chromium_path():
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("no headless Chromium: `make test` installs Debian's chromium-headless-shell (as root)")


@contextlib.contextmanager
def browser_page(width=1400, height=1000):
    """(page, console_errors): a fresh page; console errors and page errors are collected."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            errors = []
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            yield page, errors
        finally:
            browser.close()
