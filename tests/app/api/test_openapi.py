"""The served OpenAPI document: every route described, bearer auth declared, examples on the main requests."""

from __future__ import annotations

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
