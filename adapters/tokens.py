"""Signed tokens: EdDSA (Ed25519) JWTs with `kid`, from a keyring on disk.

The keyring is a folder of `<kid>.pem` private keys plus `active` naming the
signing key. Rotation adds a key and makes it active; older keys keep
verifying (they stay in the JWKS) until retired. Verification pins the
algorithm (EdDSA only), requires exp, iat, nbf, iss, aud, sub and typ, and
knows only its own kids: `alg: none`, HS256 signed with the public key, a
foreign kid, a wrong audience or issuer, an expired or not-yet-valid token,
and a tampered payload are all refused.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
import uuid
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from domain.identity import TokenExpired, TokenInvalid

ALGORITHM = "EdDSA"
ISSUER = "attendwise"
AUDIENCE = "attendwise-api"
ACCESS_TTL = dt.timedelta(minutes=15)
REFRESH_TTL = dt.timedelta(days=30)
LEEWAY = dt.timedelta(seconds=10)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Keyring:
    """Ed25519 signing keys in a folder (created with mode 0700 on first use)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.keys: dict[str, Ed25519PrivateKey] = {}
        self._public: dict[str, tuple[Ed25519PrivateKey, Ed25519PublicKey]] = {}  # kid -> (its key, public half)
        self.active = ""
        self._loaded_at = 0.0
        self.reload()

    def reload(self) -> None:
        """Read the folder. The first process to find it empty makes the
        first key (under a file lock, so processes starting together agree)."""
        import fcntl
        import time

        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.folder / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (self.folder / "active").exists():
                self.rotate()
        self._loaded_at = time.monotonic()
        self.keys = {p.stem: serialization.load_pem_private_key(p.read_bytes(), password=None)  # type: ignore[misc]
                     for p in sorted(self.folder.glob("*.pem"))}
        self.active = (self.folder / "active").read_text().strip()
        if self.active not in self.keys:
            raise RuntimeError(f"keyring {self.folder}: active key {self.active!r} has no .pem file")

    def rotate(self) -> str:
        """A new signing key; the old ones keep verifying until retired."""
        kid = f"k{dt.datetime.now(dt.timezone.utc):%Y%m%d%H%M%S}-{secrets.token_hex(3)}"
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        path = self.folder / f"{kid}.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, pem)
        os.close(fd)
        (self.folder / "active").write_text(kid)
        self.keys[kid], self.active = key, kid
        return kid

    def retire(self, kid: str) -> None:
        if kid == self.active:
            raise ValueError("rotate first: the active key cannot be retired")
        (self.folder / f"{kid}.pem").unlink(missing_ok=True)
        self.keys.pop(kid, None)

    def public(self, kid: str) -> Ed25519PublicKey | None:
        """A kid this process has not seen may be another process's new key:
        look at the folder again (at most once a second)."""
        import time

        if kid not in self.keys and time.monotonic() - self._loaded_at > 1.0:
            self.reload()
        key = self.keys.get(kid)
        if key is None:
            return None
        known = self._public.get(kid)
        if known is None or known[0] is not key:  # derived once per key (every request verifies a token)
            known = self._public[kid] = (key, key.public_key())
        return known[1]

    def verifying_key(self, token: str, invalid: Callable[[str], Exception]) -> Ed25519PublicKey:
        """The public key a token says it was signed with, after pinning the
        algorithm; `invalid(message)` is raised for a non-JWT, another
        algorithm (`none`, HS256 with the public key...) or an unknown kid."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise invalid("this is not a JWT") from e
        if header.get("alg") != ALGORITHM:
            raise invalid("the token's algorithm is not accepted")
        key = self.public(str(header.get("kid", "")))
        if key is None:
            raise invalid("the token was signed with an unknown key")
        return key

    def jwks(self) -> dict[str, Any]:
        out = []
        for kid, key in self.keys.items():
            raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            out.append({"kty": "OKP", "crv": "Ed25519", "x": _b64(raw), "kid": kid, "alg": ALGORITHM, "use": "sig"})
        return {"keys": out}


@dataclass(frozen=True)
class Claims:
    subject: str
    token_type: str  # "access" | "refresh"
    jti: str
    family: str | None
    roles: tuple[str, ...]
    expires: dt.datetime
    scope: str | None = None  # what a single-purpose token is for (e.g. "reply_to_post:email" to unsubscribe)


class TokenService:
    def __init__(self, keyring: Keyring, clock: Any = None) -> None:
        self.keyring = keyring
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))

    def _sign(self, claims: dict[str, Any]) -> str:
        kid = self.keyring.active
        return jwt.encode(claims, self.keyring.keys[kid], algorithm=ALGORITHM, headers={"kid": kid, "typ": "JWT"})

    def issue(self, subject: str, token_type: str, ttl: dt.timedelta, *, family: str | None = None,
              roles: tuple[str, ...] = (), jti: str | None = None, scope: str | None = None) -> tuple[str, Claims]:
        now = self.clock()
        claims = Claims(subject, token_type, jti or uuid.uuid4().hex, family, roles, now + ttl, scope)
        payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "typ": token_type, "jti": claims.jti,
                   "iat": now, "nbf": now, "exp": claims.expires, "roles": list(roles)}
        if family:
            payload["fam"] = family
        if scope is not None:
            payload["scope"] = scope
        return self._sign(payload), claims

    def verify(self, token: str, token_type: str) -> Claims:
        key = self.keyring.verifying_key(token, TokenInvalid)
        try:
            payload = jwt.decode(
                token, key, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER, leeway=LEEWAY,
                options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
            )
        except jwt.ExpiredSignatureError as e:
            raise TokenExpired("the token has expired") from e
        except jwt.ImmatureSignatureError as e:
            raise TokenInvalid("the token is not valid yet") from e
        except jwt.PyJWTError as e:
            raise TokenInvalid(f"the token is not valid: {type(e).__name__}") from e
        if payload.get("typ") != token_type:
            raise TokenInvalid(f"this is not a {token_type} token")
        exp = dt.datetime.fromtimestamp(payload["exp"], dt.timezone.utc)
        return Claims(payload["sub"], token_type, payload["jti"], payload.get("fam"), tuple(payload.get("roles", ())),
                      exp, payload.get("scope"))


def unverified(token: str) -> dict[str, Any]:  # for tests and debugging only
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
