"""The API documentation in a real browser (headless Chromium) on a machine with no network: a real
`drumbeat api` serves /docs and every file it needs, so the page renders the operations with nothing asked
of any host but the server, under its Content-Security-Policy (no refusal in the browser's log). A
screenshot of the page is kept in the test's directory (its path is printed, and in a failure)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.browser import browser_errors, chromium, foreign_requests, requested_urls
from tests.support.processes import api_server, drumbeat_environment

# Operations the page must show: paths Swagger UI renders once it has read the OpenAPI document.
KNOWN_PATHS = ("/api/v1/sequences", "/api/v1/enrollments", "/api/v1/contacts/import")


@pytest.fixture
def server(db_url) -> Iterator[str]:
    with api_server(drumbeat_environment(DATABASE_URL=db_url, DRUMBEAT_LOG_FORMAT="json")) as base:
        yield base


def shown_paths(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [element.text for element in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")]


@pytest.mark.parametrize("page", ["/docs", "/docs/swagger"])
def test_the_docs_render_the_operations_offline_from_the_server_alone(server, page, tmp_path):
    from selenium.webdriver.support.wait import WebDriverWait

    with chromium(offline=True) as driver:
        shot = tmp_path / "docs.png"
        try:
            driver.get(server + page)
            WebDriverWait(driver, 20).until(lambda d: set(KNOWN_PATHS) <= {p.strip() for p in shown_paths(d)})
            assert driver.title == "Drumbeat API"
            requested = [url for url in requested_urls(driver) if not url.startswith("data:")]
            assert server + "/docs/openapi.json" in requested
            assert [url for url in requested if not url.startswith(server + "/")] == []
            assert foreign_requests(driver, server) == []
            assert browser_errors(driver) == []
            assert "Multi-step SMS and email outreach sequences" in driver.page_source
        finally:
            driver.save_screenshot(str(shot))
            print(f"screenshot: {shot}")
