"""Fixtures of the API tests (tests/support/api.py): the real API (create_app) on a real, private database
per test, and two tenants, each a user who owns a workspace plus an owner API key for it."""

from tests.support.api import api_settings, client, other_tenant, tenant  # noqa: F401  (pytest fixtures)
