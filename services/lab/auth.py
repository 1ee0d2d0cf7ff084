"""Logins the lab hands out the way CNC and PCA do.

CNC: a CAS-style ticket-granting ticket (``TGT-<n>-<random>``) from username/password, then a
JWT per service from the TGT. The JWT is a real HS256 JWT (three base64url parts, ``sub`` and
``exp`` in the payload) signed with a secret the lab draws at start-up. Live TGTs are capped
per user; deleting a TGT ends its session, so its JWTs stop working too.

PCA: ``POST /api/v1/auth/login`` hands an opaque bearer token in the ``authorization`` response
header; tokens expire after ``CXM_LAB_PCA_TOKEN_TTL_S``.

Plain synchronous code over a clock, so tests can move time without sleeping.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class LoginRefused(Exception):
    """Wrong credentials, an unknown/expired ticket, or too many sessions (HTTP 401)."""


class MalformedToken(Exception):
    """A bearer that is not a JWT at all: CNC answers 500 with an empty body."""


class BadToken(Exception):
    """A JWT CNC does not accept (expired, unknown, forged): 403 ``Unauthorized request``."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Ticket:
    tgt: str
    username: str
    expires: float


class Sessions:
    """CNC tickets and JWTs, PCA tokens; ``clock`` is wall-clock seconds (JWT ``exp``)."""

    def __init__(
        self,
        *,
        cnc_credentials: tuple[str, str],
        pca_credentials: tuple[str, str],
        max_sessions: int,
        jwt_ttl_s: float,
        tgt_ttl_s: float,
        pca_token_ttl_s: float,
        clock: Callable[[], float] = time.time,
    ):
        self.cnc_credentials = cnc_credentials
        self.pca_credentials = pca_credentials
        self.max_sessions = max_sessions
        self.jwt_ttl_s = jwt_ttl_s
        self.tgt_ttl_s = tgt_ttl_s
        self.pca_token_ttl_s = pca_token_ttl_s
        self.clock = clock
        self.secret = secrets.token_bytes(32)
        self.tickets: dict[str, Ticket] = {}
        self.pca_tokens: dict[str, float] = {}
        self._serial = 0
        self.logins = {"cnc": 0, "jwt": 0, "pca": 0}
        """How many TGTs, JWTs and PCA tokens were handed out (for /lab/state and tests)."""

    # --- CNC -----------------------------------------------------------------------------

    def _purge(self) -> None:
        now = self.clock()
        for tgt in [t for t, ticket in self.tickets.items() if ticket.expires <= now]:
            del self.tickets[tgt]

    def grant_tgt(self, username: str, password: str) -> str:
        user, secret = self.cnc_credentials
        if not (
            hmac.compare_digest(username.encode(), user.encode())
            and hmac.compare_digest(password.encode(), secret.encode())
        ):
            raise LoginRefused("Invalid credentials")
        self._purge()
        if sum(1 for t in self.tickets.values() if t.username == username) >= self.max_sessions:
            raise LoginRefused("Maximum sessions reached")
        self._serial += 1
        tgt = f"TGT-{self._serial}-{secrets.token_urlsafe(24)}-cas"
        self.tickets[tgt] = Ticket(tgt, username, self.clock() + self.tgt_ttl_s)
        self.logins["cnc"] += 1
        return tgt

    def grant_jwt(self, tgt: str, service: str) -> str:
        self._purge()
        ticket = self.tickets.get(tgt)
        if ticket is None:
            raise LoginRefused("TGT is unknown or expired")
        now = int(self.clock())
        header = {"alg": "HS256", "typ": "JWT"}
        payload = {
            "sub": ticket.username,
            "iss": "https://crosswork/sso",
            "aud": service,
            "iat": now,
            "exp": now + int(self.jwt_ttl_s),
            "jti": secrets.token_hex(8),
            "tgt": hashlib.sha256(tgt.encode()).hexdigest()[:16],
        }
        signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
        signature = hmac.new(self.secret, signing.encode(), hashlib.sha256).digest()
        self.logins["jwt"] += 1
        return f"{signing}.{_b64(signature)}"

    def delete_tgt(self, tgt: str) -> bool:
        return self.tickets.pop(tgt, None) is not None

    def check_jwt(self, authorization: str | None) -> dict[str, Any]:
        """The JWT's payload; MalformedToken (500) or BadToken (403) otherwise."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise BadToken("no bearer token")
        parts = token.strip().split(".")
        if len(parts) != 3:
            raise MalformedToken("not a JWT")
        try:
            payload: dict[str, Any] = json.loads(_unb64(parts[1]))
            signature = _unb64(parts[2])
        except (ValueError, binascii.Error):
            raise MalformedToken("not a JWT") from None
        expected = hmac.new(self.secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256)
        if not hmac.compare_digest(signature, expected.digest()):
            raise BadToken("signature")
        if not isinstance(payload, dict) or float(payload.get("exp", 0)) <= self.clock():
            raise BadToken("expired")
        self._purge()
        live = {hashlib.sha256(t.encode()).hexdigest()[:16] for t in self.tickets}
        if payload.get("tgt") not in live:
            raise BadToken("session ended")
        return payload

    # --- PCA -----------------------------------------------------------------------------

    def pca_login(self, username: str, password: str) -> str:
        user, secret = self.pca_credentials
        if not (
            hmac.compare_digest(username.encode(), user.encode())
            and hmac.compare_digest(password.encode(), secret.encode())
        ):
            raise LoginRefused("Invalid username or password")
        now = self.clock()
        for token in [t for t, exp in self.pca_tokens.items() if exp <= now]:
            del self.pca_tokens[token]
        token = secrets.token_urlsafe(32)
        self.pca_tokens[token] = now + self.pca_token_ttl_s
        self.logins["pca"] += 1
        return token

    def check_pca(self, authorization: str | None) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        expires = self.pca_tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if expires is None or expires <= self.clock():
            raise BadToken("token unknown or expired")
