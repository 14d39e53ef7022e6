"""Accounts and tokens over HTTP: register, log in, refresh with rotation,
reuse detection, and refusals, on both stacks."""

from __future__ import annotations

import httpx

from tests.e2e.conftest import Stack, gql

PASSWORD = "correct horse battery"


def register(base: str, email: str = "grace@example.org") -> str:
    r = httpx.post(base + "/users", json={"email": email, "display_name": "Grace", "password": PASSWORD}, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def login(base: str, email: str = "grace@example.org", password: str = PASSWORD) -> httpx.Response:
    return httpx.post(base + "/auth/token", data={"grant_type": "password", "username": email, "password": password},
                      timeout=10)


def test_login_me_refresh_rotation_and_reuse_revocation(base_url: Stack) -> None:
    uid = register(base_url)
    r = login(base_url, email="GRACE@example.org")
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["token_type"] == "Bearer" and first["expires_in"] == 900 and first["user_id"] == uid

    me = httpx.get(base_url + "/me", headers={"Authorization": f"Bearer {first['access_token']}"})
    assert me.status_code == 200 and me.json()["email"] == "grace@example.org"

    second = httpx.post(base_url + "/auth/token", data={"grant_type": "refresh_token",
                                                        "refresh_token": first["refresh_token"]}).json()
    assert second["refresh_token"] != first["refresh_token"]
    third = httpx.post(base_url + "/auth/token", data={"grant_type": "refresh_token",
                                                       "refresh_token": second["refresh_token"]})
    assert third.status_code == 200

    # the first refresh token again: a thief's replay. The whole login dies.
    replay = httpx.post(base_url + "/auth/token", data={"grant_type": "refresh_token",
                                                        "refresh_token": first["refresh_token"]})
    assert replay.status_code == 401 and replay.json()["code"] == "REFRESH_TOKEN_REUSED"
    latest = httpx.post(base_url + "/auth/token", data={"grant_type": "refresh_token",
                                                        "refresh_token": third.json()["refresh_token"]})
    assert latest.status_code == 401 and latest.json()["code"] == "TOKEN_REVOKED"
    assert login(base_url).status_code == 200  # signing in again works


def test_wrong_passwords_and_unknown_emails_get_the_same_answer(base_url: Stack) -> None:
    register(base_url, "alan@example.org")
    wrong = login(base_url, "alan@example.org", "not the password!")
    unknown = login(base_url, "nobody@example.org", PASSWORD)
    for r in (wrong, unknown):
        assert r.status_code == 401 and r.json()["code"] == "INVALID_CREDENTIALS"
        assert r.headers["content-type"] == "application/problem+json"
    assert wrong.json() == unknown.json()


def test_missing_or_bad_bearer_tokens_are_401_with_www_authenticate(base_url: Stack) -> None:
    for headers in ({}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="}):
        r = httpx.get(base_url + "/me", headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["code"] == "TOKEN_INVALID"
    uid = register(base_url, "ken@example.org")
    refresh_as_access = login(base_url, "ken@example.org").json()["refresh_token"]
    r = httpx.get(base_url + "/me", headers={"Authorization": f"Bearer {refresh_as_access}"})
    assert r.status_code == 401 and uid


def test_weak_passwords_are_refused_and_nothing_is_recorded(base_url: Stack) -> None:
    r = httpx.post(base_url + "/users", json={"email": "weak@example.org", "display_name": "W",
                                              "password": "aaaaaaaaaaaa"})
    assert r.status_code == 422 and r.json()["errors"] == [{"field": "password"}]
    assert login(base_url, "weak@example.org", "aaaaaaaaaaaa").status_code == 401
    ok = httpx.post(base_url + "/users", json={"email": "weak@example.org", "display_name": "W", "password": PASSWORD})
    assert ok.status_code == 201  # the refused attempt left nothing behind, not even the email


def test_jwks_publishes_the_signing_key(base_url: Stack) -> None:
    keys = httpx.get(base_url + "/.well-known/jwks.json").json()["keys"]
    assert keys and all(k["kty"] == "OKP" and k["crv"] == "Ed25519" and k["alg"] == "EdDSA" for k in keys)
    assert all("d" not in k for k in keys)  # never the private part
    assert gql(base_url, "{ __typename }")["data"]["__typename"] == "Query"


def test_change_password_signs_out_other_logins_and_profile_updates(base_url: Stack) -> None:
    register(base_url, "pat@example.org")
    phone = login(base_url, "pat@example.org").json()
    laptop = login(base_url, "pat@example.org").json()
    auth = {"Authorization": f"Bearer {laptop['access_token']}"}
    wrong = httpx.post(base_url + "/me/password", json={"current_password": "nope nope nope", "new_password": "a new pass phrase"},
                       headers=auth)
    assert wrong.status_code == 401 and wrong.json()["code"] == "INVALID_CREDENTIALS"
    ok = httpx.post(base_url + "/me/password", json={"current_password": PASSWORD, "new_password": "a new pass phrase"},
                    headers=auth)
    assert ok.status_code == 204
    stale = httpx.post(base_url + "/auth/token", data={"grant_type": "refresh_token", "refresh_token": phone["refresh_token"]})
    assert stale.status_code == 401 and stale.json()["code"] == "TOKEN_REVOKED"
    assert login(base_url, "pat@example.org").status_code == 401
    assert login(base_url, "pat@example.org", "a new pass phrase").status_code == 200

    updated = httpx.patch(base_url + "/me", json={"display_name": "Pat  Q", "time_zone": "Asia/Tokyo"}, headers=auth)
    assert updated.status_code == 200 and updated.json()["display_name"] == "Pat Q"
    assert updated.json()["time_zone"] == "Asia/Tokyo"
    bad = httpx.patch(base_url + "/me", json={"time_zone": "Mars/Base"}, headers=auth)
    assert bad.status_code == 422 and bad.json()["errors"] == [{"field": "time_zone"}]


def test_delete_account_over_http(base_url: Stack) -> None:
    uid = register(base_url, "leaving@example.org")
    tokens = login(base_url, "leaving@example.org").json()
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    wrong = httpx.request("DELETE", base_url + "/me", json={"password": "not my password"}, headers=auth)
    assert wrong.status_code == 401
    gone = httpx.request("DELETE", base_url + "/me", json={"password": PASSWORD}, headers=auth)
    assert gone.status_code == 204
    assert login(base_url, "leaving@example.org").status_code == 401
    assert httpx.get(base_url + "/me", headers=auth).status_code == 404
    refresh = httpx.post(base_url + "/auth/token", data={"grant_type": "refresh_token",
                                                         "refresh_token": tokens["refresh_token"]})
    assert refresh.status_code == 401 and refresh.json()["code"] == "TOKEN_REVOKED"

    def removed() -> bool:
        return gql(base_url, "query($id: ID!) { user(id: $id) { id } }", id=uid)["data"]["user"] is None

    from tests.processes import eventually

    eventually(removed)


def test_email_verification_link_from_the_outbox(base_url: Stack) -> None:
    """The notifier (in the API process when embedded, `attendwise notify`
    on the full stack, reading JetStream) writes the mail to the outbox."""
    import json
    import re

    from tests.processes import eventually

    register(base_url, "mail@example.org")
    outbox = base_url.data_dir / "outbox"

    def mails() -> list[dict] | None:
        found = [json.loads(p.read_text()) for p in sorted(outbox.glob("*.json"))]
        return [m for m in found if m["to"] == "mail@example.org"] or None

    mine = eventually(mails, timeout=30)
    assert len(mine) == 1 and "Confirm your email" in mine[0]["subject"]
    link = re.search(r"(http://\S+/auth/verify-email\?token=\S+)", mine[0]["text"]).group(1)
    auth = {"Authorization": f"Bearer {login(base_url, 'mail@example.org').json()['access_token']}"}
    assert httpx.get(base_url + "/me", headers=auth).json()["email_verified"] is False
    assert httpx.get(link.replace("http://testserver", base_url)).status_code == 204
    assert httpx.get(base_url + "/me", headers=auth).json()["email_verified"] is True
    forged = httpx.get(base_url + "/auth/verify-email", params={"token": auth["Authorization"][7:]})
    assert forged.status_code == 401  # an access token is not a verification token
