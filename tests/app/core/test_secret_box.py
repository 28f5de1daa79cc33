"""app/core/secret_box.py: secrets sealed under DRUMBEAT_SECRET_KEY open under that key only, say which
scheme sealed them, and never show up in an error message or a repr."""

from __future__ import annotations

import base64
import logging

import pytest
from cryptography.fernet import Fernet

from app.core.secret_box import HKDF_INFO, HKDF_SALT, SecretBox, SecretUnreadable, derive_fernet_key
from app.core.settings import ConfigError, Settings

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
PASSWORD = "correct horse battery staple \u00e9\u6f22"


def test_a_sealed_secret_opens_under_the_same_key():
    box = SecretBox(KEY)
    sealed = box.seal(PASSWORD)
    assert sealed.startswith("v1:")
    assert PASSWORD not in sealed
    assert box.open(sealed) == PASSWORD
    assert SecretBox(KEY).open(sealed) == PASSWORD  # another box, same key: the worker after a restart


def test_sealing_twice_gives_different_text():
    box = SecretBox(KEY)
    assert box.seal(PASSWORD) != box.seal(PASSWORD)  # a fresh IV each time: equal secrets do not show


def test_the_sealed_text_is_ascii_without_whitespace():
    sealed = SecretBox(KEY).seal(PASSWORD)
    assert sealed.isascii() and sealed.isprintable() and not any(c.isspace() for c in sealed)


def test_the_empty_secret_round_trips():
    box = SecretBox(KEY)
    assert box.open(box.seal("")) == ""


def test_another_key_cannot_open_it_and_says_why():
    sealed = SecretBox(KEY).seal(PASSWORD)
    with pytest.raises(SecretUnreadable, match="another DRUMBEAT_SECRET_KEY") as raised:
        SecretBox(OTHER_KEY).open(sealed)
    assert PASSWORD not in str(raised.value) and sealed[3:] not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s[:-2] + ("AA" if not s.endswith("AA") else "BB"),  # altered
        lambda s: s[:20],  # truncated
        lambda s: s + "x",
        lambda s: s.replace("v1:", "v1:\u00e9"),  # not ASCII
    ],
)
def test_an_altered_value_is_unreadable(mutate):
    with pytest.raises(SecretUnreadable):
        SecretBox(KEY).open(mutate(SecretBox(KEY).seal(PASSWORD)))


@pytest.mark.parametrize("value", ["", "plain-password", ":abc", "gAAAAABsomething"])
def test_a_value_that_was_never_sealed_is_named_as_such(value):
    with pytest.raises(SecretUnreadable, match="not a sealed secret"):
        SecretBox(KEY).open(value)


def test_an_unknown_scheme_is_named():
    sealed = SecretBox(KEY).seal(PASSWORD)
    with pytest.raises(SecretUnreadable, match="scheme 'v2'"):
        SecretBox(KEY).open("v2:" + sealed.removeprefix("v1:"))


def test_the_v1_key_is_hkdf_sha256_of_the_secret_key_with_the_documented_salt_and_info():
    # The stored format: a v1 value is a plain Fernet token under this derived key, so another
    # implementation (or a future Drumbeat) can open it from the documented parameters alone.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    expected = HKDF(algorithm=hashes.SHA256(), length=32, salt=HKDF_SALT, info=HKDF_INFO).derive(KEY)
    assert derive_fernet_key(KEY) == base64.urlsafe_b64encode(expected)
    sealed = SecretBox(KEY).seal(PASSWORD)
    assert Fernet(derive_fernet_key(KEY)).decrypt(sealed.removeprefix("v1:").encode()).decode() == PASSWORD
    assert (HKDF_SALT, HKDF_INFO) == (b"drumbeat.secret-box", b"drumbeat stored secrets v1: fernet key")


def test_the_derived_key_is_not_the_secret_key_itself():
    assert base64.urlsafe_b64decode(derive_fernet_key(KEY)) != KEY[:32]


def test_from_settings_uses_drumbeat_secret_key():
    box = SecretBox.from_settings(Settings(database_url="postgresql://x", secret_key=KEY))
    assert box.open(SecretBox(KEY).seal(PASSWORD)) == PASSWORD


def test_from_settings_without_a_secret_key_names_the_variable():
    with pytest.raises(ConfigError, match="DRUMBEAT_SECRET_KEY is not set"):
        SecretBox.from_settings(Settings(database_url="postgresql://x"))
    with pytest.raises(ConfigError, match="DRUMBEAT_SECRET_KEY"):
        SecretBox(b"")


def test_nothing_secret_is_shown_or_logged(caplog):
    caplog.set_level(logging.DEBUG)
    box = SecretBox(KEY)
    sealed = box.seal(PASSWORD)
    box.open(sealed)
    assert repr(box) == "SecretBox()"
    assert PASSWORD not in caplog.text and KEY.decode() not in caplog.text
