"""End-to-end tests use the API test fixtures (the real app on a private database per test)."""

from tests.support.api import api_settings, client  # noqa: F401  (pytest fixtures)
