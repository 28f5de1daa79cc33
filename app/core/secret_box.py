"""Encrypting the short secrets Drumbeat keeps in its database (an email sender's IMAP password), with a
key derived from DRUMBEAT_SECRET_KEY.

A sealed secret is text: a version prefix, then the ciphertext, e.g. `v1:gAAAAAB...`. The prefix names the
scheme, so a later one can be added beside it and old values still opened. Scheme v1 is Fernet (AES-128-CBC
with an HMAC-SHA256, from `cryptography`) under a key derived from DRUMBEAT_SECRET_KEY by HKDF-SHA256 with
the fixed salt and info below: the derived key serves this purpose only, so the same DRUMBEAT_SECRET_KEY
signing links (app/core/links.py) never doubles as an encryption key.

Opening a value sealed under another DRUMBEAT_SECRET_KEY (or altered) raises SecretUnreadable, whose
message says so; neither the secret nor the ciphertext is ever put in a message, a log line or a repr.
Changing DRUMBEAT_SECRET_KEY therefore makes every sealed secret unreadable: they must be entered again."""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.core.settings import ConfigError, Settings

VERSION = "v1"
# Fixed, and part of the stored format: changing either makes every v1 value unreadable.
HKDF_SALT = b"drumbeat.secret-box"
HKDF_INFO = b"drumbeat stored secrets v1: fernet key"


class SecretUnreadable(ValueError):
    """A sealed secret cannot be opened: another key, an unknown scheme, or not a sealed secret at all."""


def derive_fernet_key(secret_key: bytes) -> bytes:
    """The v1 Fernet key (32 bytes, URL-safe base64 as Fernet wants it) derived from DRUMBEAT_SECRET_KEY."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=HKDF_SALT, info=HKDF_INFO)
    return base64.urlsafe_b64encode(hkdf.derive(secret_key))


class SecretBox:
    """Seals and opens short secrets under one DRUMBEAT_SECRET_KEY."""

    def __init__(self, secret_key: bytes):
        if not secret_key:
            raise ConfigError("DRUMBEAT_SECRET_KEY is not set: it encrypts stored secrets such as passwords")
        self._fernet = Fernet(derive_fernet_key(secret_key))

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        if settings.secret_key is None:
            raise ConfigError(
                "DRUMBEAT_SECRET_KEY is not set: it encrypts stored secrets such as IMAP passwords "
                "(e.g. `openssl rand -hex 32`)"
            )
        return cls(settings.secret_key)

    def seal(self, secret: str) -> str:
        """The secret, encrypted, as text safe to store: `v1:` and a Fernet token."""
        return f"{VERSION}:{self._fernet.encrypt(secret.encode()).decode('ascii')}"

    def open(self, sealed: str) -> str:
        """The secret that `seal` turned into `sealed`; SecretUnreadable when this key cannot open it."""
        version, separator, token = sealed.partition(":") if isinstance(sealed, str) else ("", "", "")
        if not separator or not version:
            raise SecretUnreadable("not a sealed secret (expected a value such as v1:...)")
        if version != VERSION:
            raise SecretUnreadable(
                f"the secret was sealed with scheme {version!r}, which this version of Drumbeat cannot open"
            )
        try:
            return self._fernet.decrypt(token.encode("ascii", "replace")).decode()
        except (InvalidToken, UnicodeDecodeError):
            raise SecretUnreadable(
                "the secret cannot be decrypted: it was sealed under another DRUMBEAT_SECRET_KEY, or altered; "
                "enter it again"
            ) from None

    def __repr__(self) -> str:  # never show key material
        return "SecretBox()"
