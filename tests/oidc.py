"""A stand-in OIDC issuer for tests: generated RSA and EC keys, and their JWKS served over HTTP
on a free loopback port, counting the fetches."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://issuer.test/realms/depot"
AUDIENCE = "depot-api"


@dataclass
class SigningKey:
    """A private key, its ``kid`` and its algorithm."""

    kid: str
    algorithm: str
    private: Any

    @classmethod
    def rsa(cls, kid: str) -> SigningKey:
        return cls(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def ec(cls, kid: str) -> SigningKey:
        return cls(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))

    @property
    def jwk(self) -> dict[str, Any]:
        to_jwk = RSAAlgorithm.to_jwk if self.algorithm == "RS256" else ECAlgorithm.to_jwk
        public: dict[str, Any] = to_jwk(self.private.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "use": "sig", "alg": self.algorithm}

    @property
    def public_pem(self) -> bytes:
        pem: bytes = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(claims, self.private, algorithm=self.algorithm, headers={"kid": self.kid, **header})


def claims(owner: str, *, ttl: int = 300, **extra: Any) -> dict[str, Any]:
    """Claims the issuer would put in a token for ``owner`` (``extra`` overrides or adds)."""
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": owner, "iat": now, "exp": now + ttl, **extra}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], payload: dict[str, Any], hmac_key: bytes | None = None) -> str:
    """A token built by hand: ``alg: none`` with an empty signature, or HS256 keyed with ``hmac_key``
    (what an attacker does with an issuer's public key)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    signature = b"" if hmac_key is None else hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


@dataclass
class Issuer:
    """The JWKS document being served, and how often it was fetched."""

    url: str = ""
    keys: list[SigningKey] = field(default_factory=list)
    fetches: int = 0
    delay: float = 0.0

    def publish(self, *keys: SigningKey) -> None:
        """Serve exactly ``keys`` from now on (rotation)."""
        self.keys = list(keys)


@contextlib.contextmanager
def serve_jwks(*keys: SigningKey) -> Iterator[Issuer]:
    """Serve the JWKS of ``keys`` at ``<url>`` on a free loopback port until the block ends."""
    issuer = Issuer(keys=list(keys))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            issuer.fetches += 1
            if issuer.delay:
                time.sleep(issuer.delay)
            body = json.dumps({"keys": [key.jwk for key in issuer.keys]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="jwks-server", daemon=True)
    thread.start()
    issuer.url = f"http://127.0.0.1:{server.server_address[1]}/realms/depot/protocol/openid-connect/certs"
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
