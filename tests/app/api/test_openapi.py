"""The served OpenAPI document: every route described, bearer auth declared, examples on the main requests.
The documentation page: Swagger UI from the server's own files (nothing from a CDN), no inline script, a
Content-Security-Policy that allows this server alone. (It renders in a real browser offline:
tests/e2e/test_api_docs_browser.py.)"""

from __future__ import annotations

import re

MAIN_REQUESTS = [
    ("post", "/api/v1/workspaces"),
    ("post", "/api/v1/senders"),
    ("post", "/api/v1/sequences"),
    ("post", "/api/v1/contacts"),
    ("post", "/api/v1/enrollments"),
    ("post", "/api/v1/enrollments/bulk"),
    ("post", "/api/v1/events"),
]


def test_openapi_document_has_auth_and_examples(client):
    spec = client.get("/docs/openapi.json").json()
    assert spec["components"]["securitySchemes"]["BearerAuth"]["scheme"] == "bearer"
    for method, path in MAIN_REQUESTS:
        media = spec["paths"][path][method]["requestBody"]["content"]["application/json"]
        assert media.get("examples") or media["schema"].get("examples"), (method, path)
    assert client.get("/docs").status_code == 200 and client.get("/docs/swagger").status_code == 200


def test_the_csv_import_documents_its_body_and_the_idempotency_key(client):
    """Its body is read as a stream (no `data` parameter), so its operation says what it takes."""
    operation = client.get("/docs/openapi.json").json()["paths"]["/api/v1/contacts/import"]["post"]
    assert set(operation["requestBody"]["content"]) == {"text/csv", "multipart/form-data"}
    assert "Idempotency-Key" in [parameter["name"] for parameter in operation["parameters"]]


def test_the_docs_page_loads_only_this_servers_files(client):
    for page in ("/docs", "/docs/swagger"):
        answer = client.get(page)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self';" in policy and "connect-src 'self';" in policy
        assert "unsafe-inline" not in policy and "default-src 'none'" in policy
        html = answer.text
        assert not re.search(r"<script(?![^>]*\bsrc=)", html)  # every script is a file: no inline code
        urls = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert urls and all(url.startswith("/docs/") for url in urls), urls
        for url in urls:
            asset = client.get(url)
            assert asset.status_code == 200 and asset.content, url
    assert (
        client.get("/docs/swagger-ui/swagger-ui-bundle.js")
        .headers["content-type"]
        .startswith("text/javascript")
    )
    assert client.get("/docs/swagger-ui/no-such-file.js").status_code == 404
