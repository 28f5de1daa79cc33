"""Field names in API errors are the request's, whatever the contract function called its argument."""

from __future__ import annotations

import asyncio

import pytest

from app.api.errors import contract_fields
from app.core.errors import Invalid


def reported(field: str, body: str | None = None) -> str | None:
    async def fail() -> None:
        async with contract_fields(body=body):
            raise Invalid("is wrong", field)

    with pytest.raises(Invalid) as caught:
        asyncio.run(fail())
    return caught.value.field


@pytest.mark.parametrize(
    ("field", "body", "expected"),
    [
        ("p_settings.daily_cap", "settings", "daily_cap"),  # a sender's settings are its body's members
        ("settings.daily_cap", "settings", "daily_cap"),  # as translated_errors leaves it (p_ removed)
        ("mailbox.host", "mailbox", "host"),
        ("p_changes.phone", None, "phone"),
        ("p_contacts[3].email", None, "email"),
        ("p_role", None, "role"),
        ("settings.timezone", None, "settings.timezone"),  # a sequence's own settings member stays
        ("p_settings.daily_cap", "mailbox", "settings.daily_cap"),  # only the named argument is the body
    ],
)
def test_fields_are_named_as_the_request_names_them(field, body, expected):
    assert reported(field, body) == expected
