"""Signed, tamper-proof links put in messages: one-click unsubscribe, the open pixel and click tracking.
A token is the delivery id and a purpose (and, for a click, the exact target URL), MACed with
DRUMBEAT_SECRET_KEY: the webhook that receives it trusts nothing else.

The HTTP side calls `verify_unsubscribe`, `verify_open` and `verify_click`; each returns None for anything
forged, altered, truncated or made for another purpose. A click token carries its target URL (and the
link's name, when the template named it) inside the MACed blob, so the redirect can only go where the sent
message pointed (no open redirect) and a click is counted for the link the author meant."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

MAC_BYTES = 16
ID_BYTES = 16
MAX_CLICK_URL_BYTES = 4096  # longer targets are left untracked: the tracked URL must fit a request line
MAX_TOKEN_CHARS = 8192  # refuse to even decode anything longer
# A link's name, as a template gives it (<a data-link-name="pricing">) and a condition names it: a short
# label, so it fits one length byte and reads well in a builder.
LINK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}")

# Browsers drop leading/trailing C0 controls and spaces and every tab/newline inside a URL (WHATWG URL).
_EDGE_JUNK = "".join(chr(c) for c in range(0x21))
_TAB_NEWLINE = re.compile("[\t\n\r]")
_CONTROL = re.compile("[\x00-\x20\x7f]")


def _b64(blob: bytes) -> str:
    return base64.urlsafe_b64encode(blob).rstrip(b"=").decode()


def _unb64(token: str) -> bytes | None:
    """The bytes of a URL-safe, unpadded base64 token; None when it is not exactly that."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or not token.isascii():
        return None
    try:
        blob = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return None
    return blob if _b64(blob) == token else None  # only the canonical spelling of a blob is accepted


def clean_url(url: str) -> str:
    """The URL a browser would follow for an href value: edges trimmed, tabs and newlines removed."""
    return _TAB_NEWLINE.sub("", url.strip(_EDGE_JUNK))


def is_web_url(url: str) -> bool:
    """An absolute http(s) URL with a host and no control characters: the only kind we sign or redirect to."""
    if _CONTROL.search(url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


@dataclass(frozen=True)
class LinkSigner:
    public_url: str
    secret: bytes

    @property
    def base_url(self) -> str:
        return self.public_url.rstrip("/")

    def _mac(self, purpose: str, payload: bytes) -> bytes:
        return hmac.new(self.secret, purpose.encode() + payload, hashlib.sha256).digest()[:MAC_BYTES]

    # --- one delivery, one purpose (unsubscribe, open) --------------------------------------------------

    def token(self, delivery_id: str, purpose: str) -> str:
        raw = uuid.UUID(delivery_id).bytes
        return _b64(raw + self._mac(purpose, raw))

    def verify(self, token: str, purpose: str) -> str | None:
        """The delivery id a token was made for, or None when it was forged, altered or made for another purpose."""
        blob = _unb64(token)
        if blob is None or len(blob) != ID_BYTES + MAC_BYTES:
            return None
        raw, mac = blob[:ID_BYTES], blob[ID_BYTES:]
        if not hmac.compare_digest(self._mac(purpose, raw), mac):
            return None
        return str(uuid.UUID(bytes=raw))

    def unsubscribe_url(self, delivery_id: str) -> str:
        return f"{self.base_url}/u/{self.token(delivery_id, 'unsubscribe')}"

    def verify_unsubscribe(self, token: str) -> str | None:
        """For GET/POST /u/{token}: the delivery id, or None."""
        return self.verify(token, "unsubscribe")

    def email_headers(self, delivery_id: str) -> dict[str, str]:
        """RFC 8058 one-click unsubscribe: mail clients POST to the URL without showing a page."""
        return {
            "List-Unsubscribe": f"<{self.unsubscribe_url(delivery_id)}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }

    def open_url(self, delivery_id: str) -> str:
        """Where the open pixel of a delivery's HTML part points."""
        return f"{self.base_url}/t/o/{self.token(delivery_id, 'open')}"

    def verify_open(self, token: str) -> str | None:
        """For GET /t/o/{token}: the delivery id, or None."""
        return self.verify(token, "open")

    # --- clicks: the delivery and the exact target URL, bound together ---------------------------------

    def click_token(self, delivery_id: str, url: str, name: str | None = None) -> str:
        """Raises ValueError for a URL we must never redirect to (not absolute http(s), or too long) and
        for a name that is not a link name."""
        target = url.encode()
        if not is_web_url(url) or len(target) > MAX_CLICK_URL_BYTES:
            raise ValueError(f"not a trackable link: {url[:100]!r}")
        raw = uuid.UUID(delivery_id).bytes
        if name is None:
            return _b64(raw + self._mac("click", raw + target) + target)
        if not is_link_name(name):
            raise ValueError(f"not a link name: {name[:100]!r}")
        # Why a second purpose rather than a new layout for every click: links in mail already sent carry
        # the unnamed layout and must keep working; the purpose tells the two apart without a version byte.
        labelled = bytes([len(name)]) + name.encode() + target
        return _b64(raw + self._mac("named_click", raw + labelled) + labelled)

    def click_url(self, delivery_id: str, url: str, name: str | None = None) -> str:
        return f"{self.base_url}/t/c/{self.click_token(delivery_id, url, name)}"

    def verify_click(self, token: str) -> tuple[str, str, str | None] | None:
        """For GET /t/c/{token}: (delivery id, target URL, link name or None) when the token is untampered,
        else None. The target is always an absolute http(s) URL that was in the message sent for that delivery."""
        blob = _unb64(token)
        if blob is None or len(blob) <= ID_BYTES + MAC_BYTES:
            return None
        raw, mac, rest = blob[:ID_BYTES], blob[ID_BYTES : ID_BYTES + MAC_BYTES], blob[ID_BYTES + MAC_BYTES :]
        if hmac.compare_digest(self._mac("click", raw + rest), mac):
            name, target = None, rest
        elif hmac.compare_digest(self._mac("named_click", raw + rest), mac) and len(rest) > rest[0] + 1:
            name, target = rest[1 : rest[0] + 1].decode("ascii", "replace"), rest[rest[0] + 1 :]
        else:
            return None
        try:
            url = target.decode()
        except UnicodeDecodeError:
            return None
        return (str(uuid.UUID(bytes=raw)), url, name) if is_web_url(url) else None


def is_link_name(name: str) -> bool:
    return LINK_NAME.fullmatch(name) is not None
