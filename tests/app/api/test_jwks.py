"""JWTs signed with an asymmetric key are verified against the keys a JWKS URL publishes (a real local
HTTP server serves them): the right key is accepted, another key is a 401, and the claims act in RLS."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from litestar.testing import TestClient

from app.api.app import create_app
from app.core.settings import Settings
from tests.support.api import PUBLIC_URL

KEY_ID = "test-key-1"


def _private_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def signing_key():
    return _private_key()


@pytest.fixture
def jwks_url(signing_key) -> Iterator[str]:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key()))
    document = json.dumps({"keys": [public | {"kid": KEY_ID, "use": "sig", "alg": "RS256"}]}).encode()

    class Keys(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Keys)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json"
    server.shutdown()


def _token(key, sub: str) -> str:
    now = int(time.time())
    claims = {"sub": sub, "aud": "authenticated", "role": "authenticated", "iat": now, "exp": now + 300}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": KEY_ID})


def test_jwks_signed_tokens_are_verified(db_url, jwks_url, signing_key):
    settings = Settings(database_url=db_url, jwks_url=jwks_url, public_url=PUBLIC_URL)
    with TestClient(create_app(settings), base_url=PUBLIC_URL) as client:
        user = str(uuid.uuid4())
        headers = {"Authorization": f"Bearer {_token(signing_key, user)}"}
        created = client.post("/api/v1/workspaces", json={"name": "Keys Inc"}, headers=headers)
        assert created.status_code == 201, created.text
        mine = client.get("/api/v1/workspaces", headers=headers).json()
        assert [w["id"] for w in mine] == [created.json()["id"]] and mine[0]["role"] == "owner"
        forged = {"Authorization": f"Bearer {_token(_private_key(), user)}"}
        refused = client.get("/api/v1/workspaces", headers=forged)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthenticated"
        hs256 = jwt.encode({"sub": user, "aud": "authenticated", "exp": int(time.time()) + 60}, "x" * 40)
        assert (
            client.get("/api/v1/workspaces", headers={"Authorization": f"Bearer {hs256}"}).status_code == 401
        )
