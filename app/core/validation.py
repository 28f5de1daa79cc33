"""Contact input checked and normalised at the edge, shared by the JSON endpoints and the CSV import:
phone numbers parsed with `phonenumbers` (national formats read in the settings' default region) and
stored as E.164; emails checked with `email-validator` (syntax only, no DNS) and lower-cased; time zones
must be IANA names. A bad value raises app.core.errors.Invalid naming the field (HTTP 422), e.g.
`phone: not a valid number for region US`. The SQL contract checks the same shapes again; these checks
exist to give a person a reason they can act on."""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Mapping
from functools import cache
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from phonenumbers import NumberParseException, PhoneNumberFormat, ValidationResult

from app.core.errors import Invalid

TEXT_FIELDS = ("first_name", "last_name", "company", "title")
STANDARD_FIELDS = ("phone", "email", *TEXT_FIELDS, "timezone")
MAX_TEXT = 1000
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
EMAIL_SHAPE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")  # the database's contacts_email_shape

PARSE_REASONS = {
    NumberParseException.INVALID_COUNTRY_CODE: "unknown country calling code",
    NumberParseException.NOT_A_NUMBER: "not a phone number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
    NumberParseException.TOO_SHORT_NSN: "too short",
    NumberParseException.TOO_LONG: "too long",
}
POSSIBLE_REASONS = {
    ValidationResult.INVALID_COUNTRY_CODE: "unknown country calling code",
    ValidationResult.TOO_SHORT: "too short",
    ValidationResult.TOO_LONG: "too long",
    ValidationResult.INVALID_LENGTH: "wrong number of digits",
}


@cache
def iana_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def normalize_phone(value: str, region: str) -> str:
    """E.164 for a valid number; a number without +country is read in `region` (e.g. US)."""
    text = value.strip()
    where = f"for region {region}" if not text.startswith("+") else None
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as error:
        reason = PARSE_REASONS.get(error.error_type, "not a phone number")
        raise Invalid(
            f"{reason} {where}" if where and reason != "not a phone number" else reason, "phone"
        ) from None
    if not phonenumbers.is_valid_number(number):
        if where is None:
            where = f"for {phonenumbers.region_code_for_country_code(number.country_code)}"
            if where == "for ZZ":
                raise Invalid("unknown country calling code", "phone")
        possible = phonenumbers.is_possible_number_with_reason(number)
        reason = POSSIBLE_REASONS.get(possible, "not a valid number")
        raise Invalid(
            f"{reason} {where}" if reason != "not a valid number" else f"not a valid number {where}", "phone"
        )
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    if not E164.match(e164):  # pragma: no cover - a valid number is always E.164-shaped
        raise Invalid("not a valid number", "phone")
    return e164


def normalize_email(value: str) -> str:
    """The normalised address, lower-cased (the database stores emails lower-case); syntax only."""
    try:
        email = validate_email(value.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as error:
        raise Invalid(str(error).rstrip("."), "email") from None
    if len(email) > 254 or not EMAIL_SHAPE.match(email):
        raise Invalid("not an email address this service can store", "email")
    return email


def check_timezone(value: str) -> str:
    zone = value.strip()
    if zone not in iana_zones():
        raise Invalid(f"unknown time zone {zone!r}: use an IANA name such as America/New_York", "timezone")
    return zone


def clean_text(value: str, field: str) -> str | None:
    text = value.strip()
    if len(text) > MAX_TEXT:
        raise Invalid(f"must be at most {MAX_TEXT} characters", field)
    return text or None


def clean_contact(raw: Mapping[str, Any], region: str) -> dict[str, Any]:
    """The normalised form of the standard keys present in `raw` (None clears: it stays None; blank
    strings become None). `fields` and `tags` pass through. Raises Invalid naming the first bad field."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None or key in ("fields", "tags"):
            out[key] = value
        elif key == "phone":
            out[key] = normalize_phone(value, region) if value.strip() else None
        elif key == "email":
            out[key] = normalize_email(value) if value.strip() else None
        elif key == "timezone":
            out[key] = check_timezone(value) if value.strip() else None
        else:
            out[key] = clean_text(value, key)
    return out


def require_reachable(contact: Mapping[str, Any]) -> None:
    if not contact.get("phone") and not contact.get("email"):
        raise Invalid("a contact needs a phone or an email", "phone")


def sql_field(path: str | None) -> str | None:
    """A contract function's field path as the API's: p_contacts[3].email (or contacts[3].email) -> email,
    p_changes.phone (or changes.phone) -> phone, p_contacts[3] -> None (the row as a whole)."""
    if not path:
        return None
    path = path.removeprefix("p_")
    head, _, rest = path.partition(".")
    if head.startswith("contacts[") or head == "changes":
        return rest or None
    return path
