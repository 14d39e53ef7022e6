"""The log is sealed as it grows (by `serve` when embedded, by the relay on
the full stack), and its signed checkpoints verify with the published keys."""

from __future__ import annotations

import base64

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from domain.audit import checkpoint_message
from tests.e2e.conftest import Stack
from tests.processes import eventually


def b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_checkpoints_are_published_and_verify_with_the_jwks(base_url: Stack) -> None:
    r = httpx.post(base_url + "/users", json={"email": "sealed@example.org", "display_name": "Sealed",
                                              "password": "correct horse battery staple"}, timeout=10)
    assert r.status_code == 201
    checkpoints = eventually(lambda: httpx.get(base_url + "/audit/checkpoints").json() or None, timeout=30)
    keys = {k["kid"]: Ed25519PublicKey.from_public_bytes(b64(k["x"]))
            for k in httpx.get(base_url + "/.well-known/jwks.json").json()["keys"]}
    for cp in checkpoints:
        keys[cp["kid"]].verify(b64(cp["signature"]), checkpoint_message(cp["position"], cp["chain"]))
    assert checkpoints[-1]["position"] >= 2
