"""A real browser for the console tests: Debian's headless Chromium driven by its chromedriver (Selenium),
both installed by .ci/run with apt-get. Selenium is pointed at those binaries, so it never tries to
download a browser or a driver. The browser's console log is kept, to assert a page logged no errors."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def browser_available() -> bool:
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()


@contextmanager
def chromium(width: int = 1280, height: int = 900, *, offline: bool = False) -> Iterator:
    """A headless Chromium window of `width` x `height`; skipped (with the reason) where none is installed
    (CI installs it: there the test always runs). `offline`: no host name but localhost resolves, as on a
    machine without a network (a page that needs a CDN breaks, and says so in its log), and every request
    is logged for requested_urls."""
    if not browser_available():
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        options.add_argument(argument)
    logs = {"browser": "ALL"}
    if offline:
        options.add_argument("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1")
        logs["performance"] = "ALL"  # the DevTools network events: every request the page made
    options.set_capability("goog:loggingPrefs", logs)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def browser_errors(driver) -> list[str]:
    """What the page logged at SEVERE level (script errors, failed loads, CSP refusals)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def foreign_requests(driver, origin: str) -> list[str]:
    """Every resource the page loaded from anywhere but `origin` (the Performance API lists them all)."""
    names = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name).concat([location.href]);"
    )
    return [name for name in names if not name.startswith(origin + "/") and not name.startswith("data:")]


def requested_urls(driver) -> list[str]:
    """Every URL the page asked for since the last call, whether it loaded, failed or was refused (the
    DevTools network events of a chromium(offline=True) session; the Performance API lists only what
    loaded)."""
    import json

    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls
