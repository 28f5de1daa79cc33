"""Signed, tamper-proof links put in messages (unsubscribe now; open pixel and click tracking use the same
signer). A token is the delivery id and a purpose, MACed with DRUMBEAT_SECRET_KEY: the webhook that
receives it trusts nothing else."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from dataclasses import dataclass

MAC_BYTES = 16


@dataclass(frozen=True)
class LinkSigner:
    public_url: str
    secret: bytes

    def token(self, delivery_id: str, purpose: str) -> str:
        raw = uuid.UUID(delivery_id).bytes
        mac = hmac.new(self.secret, purpose.encode() + raw, hashlib.sha256).digest()[:MAC_BYTES]
        return base64.urlsafe_b64encode(raw + mac).rstrip(b"=").decode()

    def verify(self, token: str, purpose: str) -> str | None:
        """The delivery id a token was made for, or None when it was forged, altered or made for another purpose."""
        try:
            blob = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError):
            return None
        if len(blob) != 16 + MAC_BYTES:
            return None
        delivery_id = str(uuid.UUID(bytes=blob[:16]))
        return delivery_id if hmac.compare_digest(self.token(delivery_id, purpose), token) else None

    def unsubscribe_url(self, delivery_id: str) -> str:
        return f"{self.public_url}/u/{self.token(delivery_id, 'unsubscribe')}"

    def email_headers(self, delivery_id: str) -> dict[str, str]:
        """RFC 8058 one-click unsubscribe: mail clients POST to the URL without showing a page."""
        return {
            "List-Unsubscribe": f"<{self.unsubscribe_url(delivery_id)}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
