"""Unknown query parameters are a 400 naming the parameter (app/api/strict_query.py): a typo such as
`?statuz=active` must not quietly list everything, nor a POST do its work while ignoring what it was
told."""

from __future__ import annotations

import psycopg

from tests.support.api import ApiTenant


def test_a_misspelt_filter_is_refused_naming_it(tenant: ApiTenant):
    refused = tenant.get("/enrollments", params={"statuz": "active"})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["field"]) == ("bad_request", "statuz")
    assert "unknown query parameter" in error["message"] and "status" in error["message"]
    assert tenant.get("/enrollments", params={"status": "active"}).status_code == 200


def test_parameters_of_dependencies_are_known(tenant: ApiTenant):
    listed = tenant.get("/contacts", params={"workspace_id": tenant.workspace_id, "page_size": 5})
    assert listed.status_code == 200, listed.text


def test_an_endpoint_without_parameters_refuses_any(tenant: ApiTenant):
    refused = tenant.get("/workspaces", params={"verbose": "1"})
    assert refused.status_code == 400
    assert refused.json()["error"]["field"] == "verbose"
    assert "takes: none" in refused.json()["error"]["message"]


def test_a_post_with_an_unknown_parameter_changes_nothing(tenant: ApiTenant, db_url):
    refused = tenant.post("/contacts", {"phone": "+15550104242"}, params={"dry_run": "true"})
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "dry_run"
    with psycopg.connect(db_url) as conn:
        count = conn.execute(
            "SELECT count(*) FROM drumbeat.contacts WHERE phone = '+15550104242'"
        ).fetchone()[0]
    assert count == 0
