"""The console's sign-in session: one cookie holding the caller's credential (an API key or a JWT) and a
CSRF token, sealed with Fernet (encrypted and authenticated, with its issue time) under a key derived from
DRUMBEAT_SECRET_KEY for this purpose only.

Why keep the credential rather than the claims it gave: every page authenticates it again exactly as the
API does (app/api/auth.py), so a revoked API key or an expired JWT ends the session at its next request,
and the console can never do more than the same credential could over the API.

The cookie is HttpOnly (no script reads it), SameSite=Lax (a cross-site POST does not carry it), Secure
when the console is served over HTTPS, and lives SESSION_SECONDS at most. Every form also carries the
session's CSRF token (synchronizer token); the sign-in form, which has no session yet, a double-submit one
from a cookie of its own."""

from __future__ import annotations

import base64
import hmac
import json
import secrets
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from litestar import Request, Response
from litestar.datastructures import Cookie

SESSION_COOKIE = "drumbeat_console"
LOGIN_CSRF_COOKIE = "drumbeat_console_login"
SESSION_SECONDS = 12 * 3600
LOGIN_SECONDS = 3600
CSRF_FIELD = "_csrf"
HKDF_SALT = b"drumbeat.console"
HKDF_INFO = b"drumbeat console session v1: fernet key"


class SignInRequired(Exception):
    """No usable session: the page redirects to the sign-in page, which shows `reason`."""

    def __init__(self, reason: str | None = None):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Session:
    credential: str
    csrf: str
    workspace_id: str | None = None


class Sessions:
    """Seals sessions into cookies and opens them; `secret_key` is DRUMBEAT_SECRET_KEY (or, when unset, a
    key made at start, so sessions end when the server restarts)."""

    def __init__(self, secret_key: bytes):
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=HKDF_SALT, info=HKDF_INFO)
        self._fernet = Fernet(base64.urlsafe_b64encode(hkdf.derive(secret_key)))

    def start(self, response: Response, request: Request, credential: str, workspace_id: str) -> None:
        session = {"credential": credential, "csrf": secrets.token_urlsafe(24), "workspace_id": workspace_id}
        sealed = self._fernet.encrypt(json.dumps(session).encode()).decode("ascii")
        response.set_cookie(cookie(request, SESSION_COOKIE, sealed, SESSION_SECONDS))
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/console")

    def switch_workspace(
        self, response: Response, request: Request, session: Session, workspace_id: str
    ) -> None:
        self.start(response, request, session.credential, workspace_id)

    def read(self, request: Request) -> Session:
        sealed = request.cookies.get(SESSION_COOKIE)
        if not sealed:
            raise SignInRequired()
        try:
            data = json.loads(self._fernet.decrypt(sealed.encode("ascii"), ttl=SESSION_SECONDS))
        except (InvalidToken, ValueError, UnicodeError):
            raise SignInRequired("your session has expired: sign in again") from None
        return Session(data["credential"], data["csrf"], data.get("workspace_id"))

    @staticmethod
    def end(response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE, path="/console")


def cookie(request: Request, name: str, value: str, max_age: int) -> Cookie:
    """Secure when this request came over HTTPS, or when DRUMBEAT_PUBLIC_URL says the console is served
    over HTTPS (behind a proxy that terminates TLS, the request itself may arrive as plain HTTP)."""
    public_url = request.app.state.settings.public_url or ""
    return Cookie(
        key=name,
        value=value,
        path="/console",
        max_age=max_age,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https" or public_url.startswith("https://"),
    )


def same_token(sent: object, expected: str | None) -> bool:
    """Constant-time comparison of a form's CSRF token with the expected one."""
    return isinstance(sent, str) and bool(expected) and hmac.compare_digest(sent.encode(), expected.encode())


def new_login_token() -> str:
    return secrets.token_urlsafe(24)
