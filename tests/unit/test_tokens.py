"""Every token attack we know of is refused, with a clear code."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.tokens import ACCESS_TTL, AUDIENCE, ISSUER, Keyring, TokenService, unverified
from domain.identity import TokenExpired, TokenInvalid

NOW = dt.datetime(2026, 11, 27, 12, tzinfo=dt.timezone.utc)


@pytest.fixture
def service(tmp_path: Path) -> TokenService:
    return TokenService(Keyring(tmp_path / "keys"), clock=lambda: NOW)


def claims(**over: object) -> dict:
    now = int(dt.datetime.now(dt.timezone.utc).timestamp())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "u1", "typ": "access", "jti": "j", "iat": now, "nbf": now,
            "exp": now + 600, "roles": ["member"]}
    base.update(over)
    return base


def signed(service: TokenService, payload: dict, kid: str | None = None) -> str:
    kid = kid or service.keyring.active
    return jwt.encode(payload, service.keyring.keys[kid], algorithm="EdDSA", headers={"kid": kid})


def test_a_fresh_token_verifies(service: TokenService) -> None:
    live = TokenService(service.keyring)
    token, _ = live.issue("u1", "access", ACCESS_TTL, roles=("member",))
    c = live.verify(token, "access")
    assert c.subject == "u1" and c.roles == ("member",)
    assert jwt.get_unverified_header(token)["kid"] == service.keyring.active


def test_alg_none_is_refused(service: TokenService) -> None:
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "kid": service.keyring.active}).encode()).rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=")
    with pytest.raises(TokenInvalid) as e:
        service.verify(f"{header.decode()}.{body.decode()}.", "access")
    assert e.value.code == "TOKEN_INVALID"


def test_hs256_signed_with_the_public_key_is_refused(service: TokenService) -> None:
    public_pem = service.keyring.keys[service.keyring.active].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    forged = _hs256(json.dumps(claims()).encode(), public_pem, service.keyring.active)  # PyJWT refuses to make it
    with pytest.raises(TokenInvalid):
        service.verify(forged, "access")


def _hs256(payload: bytes, secret: bytes, kid: str) -> str:
    import hashlib
    import hmac

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT', 'kid': kid}).encode())}.{b64(payload)}"
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


def test_an_unknown_kid_is_refused(service: TokenService) -> None:
    stranger = Ed25519PrivateKey.generate()
    token = jwt.encode(claims(), stranger, algorithm="EdDSA", headers={"kid": "not-ours"})
    with pytest.raises(TokenInvalid, match="unknown key"):
        service.verify(token, "access")
    own_kid_wrong_key = jwt.encode(claims(), stranger, algorithm="EdDSA", headers={"kid": service.keyring.active})
    with pytest.raises(TokenInvalid):
        service.verify(own_kid_wrong_key, "access")


@pytest.mark.parametrize("over", [{"aud": "someone-else"}, {"iss": "evil"}])
def test_wrong_audience_or_issuer_is_refused(service: TokenService, over: dict) -> None:
    with pytest.raises(TokenInvalid):
        service.verify(signed(service, claims(**over)), "access")


def test_expired_and_not_yet_valid_are_refused(service: TokenService) -> None:
    now = int(dt.datetime.now(dt.timezone.utc).timestamp())
    with pytest.raises(TokenExpired) as e:
        service.verify(signed(service, claims(exp=now - 60)), "access")
    assert e.value.code == "TOKEN_EXPIRED"
    with pytest.raises(TokenInvalid, match="not valid yet"):
        service.verify(signed(service, claims(nbf=now + 3600)), "access")


def test_a_tampered_payload_is_refused(service: TokenService) -> None:
    token = signed(service, claims())
    head, _, sig = token.split(".")
    evil = base64.urlsafe_b64encode(json.dumps(claims(sub="admin", roles=["platform_admin"])).encode()).rstrip(b"=")
    with pytest.raises(TokenInvalid):
        service.verify(f"{head}.{evil.decode()}.{sig}", "access")


def test_missing_claims_and_the_wrong_token_type_are_refused(service: TokenService) -> None:
    payload = claims()
    del payload["jti"]
    with pytest.raises(TokenInvalid):
        service.verify(signed(service, payload), "access")
    with pytest.raises(TokenInvalid, match="not a access token"):
        service.verify(signed(service, claims(typ="refresh")), "access")
    with pytest.raises(TokenInvalid):
        service.verify("not.a.jwt", "access")


def test_rotation_keeps_old_tokens_valid_until_the_key_is_retired(tmp_path: Path) -> None:
    keyring = Keyring(tmp_path / "keys")
    svc = TokenService(keyring)
    old_kid = keyring.active
    old, _ = svc.issue("u1", "access", ACCESS_TTL)
    new_kid = keyring.rotate()
    new, _ = svc.issue("u1", "access", ACCESS_TTL)
    assert jwt.get_unverified_header(new)["kid"] == new_kid != old_kid
    assert {k["kid"] for k in keyring.jwks()["keys"]} == {old_kid, new_kid}
    assert svc.verify(old, "access").subject == svc.verify(new, "access").subject == "u1"
    other_process = TokenService(Keyring(tmp_path / "keys"))  # another API process sharing the folder
    assert other_process.verify(old, "access").subject == "u1"
    keyring.retire(old_kid)
    with pytest.raises(TokenInvalid, match="unknown key"):
        svc.verify(old, "access")
    assert unverified(new)["sub"] == "u1"


def test_the_jwks_verifies_tokens_offline(service: TokenService) -> None:
    token, _ = TokenService(service.keyring).issue("u9", "access", ACCESS_TTL)
    jwk = next(k for k in service.keyring.jwks()["keys"] if k["kid"] == jwt.get_unverified_header(token)["kid"])
    key = jwt.PyJWK(jwk)
    assert jwt.decode(token, key, algorithms=["EdDSA"], audience=AUDIENCE)["sub"] == "u9"
