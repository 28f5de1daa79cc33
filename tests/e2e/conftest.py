"""End-to-end tests use the API test fixtures (the real app on a private database per test)."""

from tests.app.api.conftest import api_settings, client  # noqa: F401  (pytest fixtures)
