"""Who is calling: `Authorization: Bearer <token>` with either a Drumbeat API key (dbk_...) or a JWT —
HS256 with DRUMBEAT_JWT_SECRET (a Supabase project's secret) or RS/ES/EdDSA against DRUMBEAT_JWKS_URL;
`exp` is required and `aud` checked. The result is the claims the request's transaction acts with.
An API key is a member of its workspace (sql/functions/api_keys.sql): its claims are {"sub": key id}."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt
import psycopg

from app.core.errors import Unauthenticated
from app.core.queries import queries
from app.core.settings import Settings

API_KEY_PREFIX = "dbk_"
ASYMMETRIC = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "EdDSA"]


@dataclass(frozen=True)
class Caller:
    claims: dict[str, Any]
    api_key: bool

    @property
    def user_id(self) -> str:
        return self.claims["sub"]


class Authenticator:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._jwks = jwt.PyJWKClient(settings.jwks_url, cache_keys=True) if settings.jwks_url else None

    async def caller(self, conn: psycopg.AsyncConnection, authorization: str | None) -> Caller:
        """The caller of a request, or Unauthenticated (401) saying what is wrong with the credentials."""
        token = bearer_token(authorization)
        if token.startswith(API_KEY_PREFIX):
            return await self._api_key(conn, token)
        return Caller(claims=self._jwt_claims(token), api_key=False)

    async def _api_key(self, conn: psycopg.AsyncConnection, token: str) -> Caller:
        cursor = await conn.execute(queries("api_auth")["authenticate_api_key"], (token,))
        key_id = (await cursor.fetchone())["key_id"]
        if key_id is None:
            raise Unauthenticated("the API key is unknown or revoked")
        return Caller(
            claims={"sub": str(key_id), "role": "authenticated", "drumbeat_api_key": True}, api_key=True
        )

    def _jwt_claims(self, token: str) -> dict[str, Any]:
        if self.settings.jwt_secret is None and self._jwks is None:
            raise Unauthenticated(
                "not a Drumbeat API key, and JWTs are not accepted here "
                "(set DRUMBEAT_JWT_SECRET or DRUMBEAT_JWKS_URL to accept them)"
            )
        try:
            claims = jwt.decode(
                token,
                self._verification_key(token),
                algorithms=["HS256"] if self._jwks is None else ASYMMETRIC,
                audience=self.settings.jwt_audience,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError as error:
            raise Unauthenticated("the token has expired") from error
        except jwt.InvalidAudienceError as error:
            raise Unauthenticated(
                f"the token is not meant for this API (aud must be {self.settings.jwt_audience})"
            ) from error
        except (jwt.PyJWTError, jwt.PyJWKClientError) as error:
            raise Unauthenticated(f"invalid token: {error}") from error
        return claims | {"role": "authenticated"}

    def _verification_key(self, token: str) -> Any:
        if self._jwks is None:
            return self.settings.jwt_secret
        return self._jwks.get_signing_key_from_jwt(token).key


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated("missing Authorization header: send `Authorization: Bearer <API key or JWT>`")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be `Bearer <API key or JWT>`")
    return token.strip()
