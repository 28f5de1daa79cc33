"""A contact's time zone inferred from its phone, in the database: a Supabase client importing over RPC
gets the same zone as the HTTP API (which calls the same functions), a stored zone is never replaced,
and the prefix table agrees with libphonenumber, where the data came from."""

from __future__ import annotations

import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType
from phonenumbers import timezone as libphonenumber_zones
from psycopg.types.json import Jsonb

from tests.sql.factories import new_tenant
from tests.support import act_as_owner, call


@pytest.fixture
def tenant(conn):
    return new_tenant(conn)


def stored_zone(tenant, contact_id) -> str | None:
    return tenant.conn.execute(
        "SELECT timezone FROM drumbeat.contacts WHERE id = %s", (contact_id,)
    ).fetchone()[0]


def test_rpc_import_infers_the_zone_of_an_unambiguous_number(tenant):
    new_york, toll_free, london = tenant.contacts(
        {"phone": "+12125550100"}, {"phone": "+18005550100"}, {"phone": "+442079460000"}
    )
    assert stored_zone(tenant, new_york) == "America/New_York"
    assert stored_zone(tenant, toll_free) is None  # +1 800 spans the continent
    assert stored_zone(tenant, london) == "Europe/London"


def test_a_given_or_stored_zone_wins_over_the_phone(tenant):
    [given] = tenant.contacts({"phone": "+12125550101", "timezone": "Europe/Paris"})
    assert stored_zone(tenant, given) == "Europe/Paris"
    tenant.contacts({"phone": "+12125550101", "first_name": "Ada"})  # a re-import without a zone
    assert stored_zone(tenant, given) == "Europe/Paris"
    [cleared] = tenant.contacts({"phone": "+12125550102", "timezone": None})  # an explicit null stays null
    assert stored_zone(tenant, cleared) is None


def test_a_matched_contact_without_a_zone_gets_its_phones(tenant):
    [by_email] = tenant.contacts({"email": "ada@example.com"})
    assert stored_zone(tenant, by_email) is None
    tenant.contacts({"email": "ada@example.com", "phone": "+13125550100"})
    assert stored_zone(tenant, by_email) == "America/Chicago"


def test_update_contact_infers_a_missing_zone_from_the_new_phone(tenant):
    [contact] = tenant.contacts({"email": "grace@example.com"})
    call(tenant.conn, "update_contact", contact, Jsonb({"phone": "+14155550100"}))
    assert stored_zone(tenant, contact) == "America/Los_Angeles"
    call(tenant.conn, "update_contact", contact, Jsonb({"phone": "+12125550100"}))
    assert stored_zone(tenant, contact) == "America/Los_Angeles"  # it has one now: the move keeps it


def example_numbers() -> list[str]:
    """Example numbers of every region libphonenumber knows and of every type (landline, mobile, toll
    free, VoIP...), and one invalid variant of each (a digit more)."""
    numbers = set()
    for region in phonenumbers.SUPPORTED_REGIONS:
        for kind in vars(PhoneNumberType).values():
            if isinstance(kind, int) and (example := phonenumbers.example_number_for_type(region, kind)):
                e164 = phonenumbers.format_number(example, PhoneNumberFormat.E164)
                numbers |= {e164, e164 + "1"}
    return sorted(n for n in numbers if as_stored(n) == n)


def as_stored(number: str) -> str:
    """The E.164 form the API stores for a number (+241 0.. in Gabon loses its 0)."""
    return phonenumbers.format_number(phonenumbers.parse(number, None), PhoneNumberFormat.E164)


def test_the_prefix_table_agrees_with_libphonenumber(tenant):
    act_as_owner(tenant.conn)  # drumbeat.phone_timezone is internal: the contract functions call it
    known_zones = {row[0] for row in tenant.conn.execute("SELECT name FROM drumbeat.timezones")}
    numbers = example_numbers()
    assert len(numbers) > 1500
    disagreements = []
    for number in numbers:
        zones = libphonenumber_zones.time_zones_for_number(phonenumbers.parse(number, None))
        expected = zones[0] if len(zones) == 1 and zones[0] in known_zones else None
        inferred = tenant.conn.execute("SELECT drumbeat.phone_timezone(%s)", (number,)).fetchone()[0]
        if inferred != expected:
            disagreements.append((number, expected, inferred))
    assert disagreements == []
