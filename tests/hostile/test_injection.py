"""Injection attempts in every free-text field, on the full stack (PostgreSQL
event store and read models, JetStream, the Neo4j feed graph): quotes, SQL
and Cypher fragments, format placeholders, unicode tricks (fullwidth,
combining marks, bidi overrides, zero-width, astral characters, control
characters) are stored and read back verbatim, through GraphQL, the feed
(Neo4j) and the tables themselves, and change nothing else. The one rule:
a NUL character is refused (422 INVALID_INPUT; PostgreSQL cannot store it,
so it would stop a projection), and nothing of that request is recorded."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import neo4j
import psycopg
import pytest

from tests.e2e.conftest import Stack
from tests.hostile.conftest import PASSWORD
from tests.processes import eventually

HOSTILE = [
    "Robert'); DROP TABLE rm_users; --",
    "' OR '1'='1' --",
    '"; DELETE FROM stored_events WHERE "1"="1',
    "1; SELECT pg_sleep(30); --",
    "$$; DROP TABLE rm_posts; $$ E'\\x41'",
    "%s %(text)s {0} {text} ${x} ?1 $1 :name",
    "\\'; \\\"; \\\\ \\u0041",
    "}) MATCH (n) DETACH DELETE n //",
    "' }) WITH 1 AS x MATCH (n) DETACH DELETE n RETURN 1 //",
    "`Post` {ns: $ns}) SET p.removed = true //",
    "ＤＲＯＰ　ＴＡＢＬＥ　ｕｓｅｒｓ；",  # fullwidth, with ideographic spaces
    "e\u0301te\u0301 \u00e9t\u00e9",  # combining marks and precomposed: both kept, never normalised
    "\u212b \u00c5 A\u030a \ufb01 \u01c4",  # angstrom sign, A-ring three ways, ligatures
    "\u202eevil\u202c \u2066iso\u2069 \u200f!",  # bidi overrides and isolates
    "zero\u200bwidth\u200d\ufeff joiners",
    "<script>alert('x')</script><img src=x onerror=alert(1)>",
    "line\nbreak\r\n\ttab \x1b[31mred\x1b[0m \x07\x7f end",  # control characters other than NUL
    "😀 👨\u200d👩\u200d👧 𝕳𝖆𝖈𝖐",  # astral plane
]

pytestmark = [pytest.mark.parametrize("base_url", ["full"], indirect=True),  # PostgreSQL, JetStream, Neo4j
              pytest.mark.stack_env(ATTENDWISE_RATE_LIMITS="false")]  # many sign-ups from one address


def as_name(text: str) -> str:
    """Names (people, communities, series), titles and reasons are one line:
    whitespace runs become one space (a rule, not an escape)."""
    return " ".join(text.split())


def as_text(text: str) -> str:
    """Texts (posts, comments, descriptions) lose outer whitespace only."""
    return text.strip()


class Client:
    def __init__(self, url: str) -> None:
        self.url = url

    def sign_up(self, email: str, name: str, password: str = PASSWORD) -> tuple[str, dict[str, str]]:
        r = httpx.post(self.url + "/users", json={"email": email, "display_name": name, "password": password},
                       timeout=10)
        assert r.status_code == 201, r.text
        token = httpx.post(self.url + "/auth/token", data={"grant_type": "password", "username": email,
                                                           "password": password}, timeout=10)
        assert token.status_code == 200, token.text
        return r.json()["id"], {"Authorization": f"Bearer {token.json()['access_token']}"}

    def call(self, method: str, path: str, auth: dict[str, str], status: int, **kw: Any) -> Any:
        r = httpx.request(method, self.url + path, headers=auth, timeout=10, **kw)
        assert r.status_code == status, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content and r.headers["content-type"].endswith("json") else None

    def gql(self, query: str, auth: dict[str, str] | None = None, **variables: Any) -> dict[str, Any]:
        r = httpx.post(self.url + "/graphql", json={"query": query, "variables": variables}, headers=auth or {},
                       timeout=10)
        assert r.status_code in (200, 400), r.text
        return r.json()


def test_hostile_text_is_stored_and_read_back_verbatim(base_url: Stack) -> None:
    api = Client(base_url)
    password = "pa'ss\"word; DROP--ＰＷ\u202e e\u0301"  # any password works, quotes and all
    ada, ada_auth = api.sign_up("o'neil+x@example.org", HOSTILE[0], password)
    people = [api.sign_up(f"p{i}@example.org", h) for i, h in enumerate(HOSTILE)]

    club = api.call("POST", "/communities", ada_auth, 201, json={"name": "Club", "description": HOSTILE[1]})["id"]
    communities = [api.call("POST", "/communities", ada_auth, 201, json={"name": h, "description": h})["id"]
                   for h in HOSTILE]
    posts = [api.call("POST", f"/communities/{club}/posts", ada_auth, 201, json={"text": h})["id"] for h in HOSTILE]
    for h in HOSTILE:
        api.call("POST", f"/posts/{posts[0]}/comments", ada_auth, 201, json={"text": h})
    api.call("PUT", f"/communities/{club}/bans/{people[0][0]}", ada_auth, 204, json={"reason": HOSTILE[2]})

    soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=20)).replace(tzinfo=None, second=0, microsecond=0)
    series = [api.call("POST", "/series", ada_auth, 201, json={
        "title": h, "host_ids": [ada], "start": soon.isoformat(), "time_zone": "UTC", "duration_minutes": 60,
        "location": {"name": h, "address": h}})["series_id"] for h in HOSTILE]
    sessions_of = "query($id: ID!) { series(id: $id) { sessions { edges { node { id } } } } }"
    sessions = [eventually(lambda s=s: (api.gql(sessions_of, id=s)["data"]["series"] or {}).get("sessions"))
                ["edges"][0]["node"]["id"] for s in series]
    for session, h in zip(sessions[1:], HOSTILE[1:], strict=True):
        api.call("POST", f"/sessions/{session}/cancel", ada_auth, 204, json={"reason": h})

    # a QR check-in with hostile device and gate names, annulled and overridden with hostile reasons
    bob, bob_auth = people[1]
    api.call("PUT", f"/sessions/{sessions[0]}/checkin-policy", ada_auth, 204, json={"policy": "qr"})
    api.call("POST", f"/sessions/{sessions[0]}/places", bob_auth, 200, json={})
    token = api.call("GET", f"/sessions/{sessions[0]}/ticket", bob_auth, 200)["token"]
    scan = api.call("POST", "/checkin", ada_auth, 200, data={"token": token, "device_id": HOSTILE[7],
                                                                  "gate": HOSTILE[8]})
    assert scan["outcome"] == "succeeded"
    api.call("POST", f"/checkins/{scan['checkin_id']}/annul", ada_auth, 204, json={"reason": HOSTILE[9]})
    api.call("PUT", f"/sessions/{sessions[0]}/attendance/{bob}", ada_auth, 204,
             json={"present": True, "reason": HOSTILE[10]})
    api.call("PUT", "/me/notification-preferences", bob_auth, 200, json={"push_token": HOSTILE[11]})

    # read back: GraphQL over the read models, and the feed over Neo4j
    people_query = "{ " + " ".join(f'u{i}: user(id: "{uid}") {{ displayName }}' for i, (uid, _) in
                                   enumerate([(ada, None), *people])) + " }"
    names = eventually(lambda: api.gql(people_query)["data"])
    assert [names[f"u{i}"]["displayName"] for i in range(len(HOSTILE) + 1)] == \
        [as_name(HOSTILE[0])] + [as_name(h) for h in HOSTILE]
    community_query = "{ " + " ".join(f'c{i}: community(id: "{c}") {{ name description }}'
                                      for i, c in enumerate(communities)) + " }"
    got = eventually(lambda: api.gql(community_query, ada_auth)["data"])
    assert [(got[f"c{i}"]["name"], got[f"c{i}"]["description"]) for i in range(len(HOSTILE))] == \
        [(as_name(h), as_text(h)) for h in HOSTILE]
    feed = "{ feed(first: 50) { edges { node { id text } } } }"
    texts = eventually(lambda: {e["node"]["id"]: e["node"]["text"] for e in
                                api.gql(feed, ada_auth)["data"]["feed"]["edges"]} or None)
    assert texts == {p: as_text(h) for p, h in zip(posts, HOSTILE, strict=True)}
    comments = """query($id: ID!) { post(id: $id) { commentCount comments(first: 50) { edges { node { text } } } } }"""
    post = eventually(lambda: (p := api.gql(comments, ada_auth, id=posts[0])["data"]["post"])
                      and p["commentCount"] == len(HOSTILE) and p)
    assert [e["node"]["text"] for e in post["comments"]["edges"]] == [as_text(h) for h in HOSTILE]
    session_query = "{ " + " ".join(
        f's{i}: session(id: "{s}") {{ title status cancelReason location {{ name address }} series {{ title }} }}'
        for i, s in enumerate(sessions)) + " }"
    got = eventually(lambda: (d := api.gql(session_query)["data"]) and d[f"s{len(HOSTILE) - 1}"]["cancelReason"]
                     and d)
    for i, h in enumerate(HOSTILE):
        s = got[f"s{i}"]
        assert s["title"] == s["series"]["title"] == as_name(h) and s["location"] == {"name": h, "address": h}, (i, s)
        assert s["cancelReason"] == (None if i == 0 else as_name(h)), (i, s)
    checkins = "query($s: ID!) { checkIns(sessionId: $s) { edges { node { deviceId gate outcome annulReason } } } }"
    attempt = eventually(lambda: (e := api.gql(checkins, ada_auth, s=sessions[0])["data"]["checkIns"]["edges"])
                         and e[0]["node"]["annulReason"] and e[0]["node"])
    assert attempt == {"deviceId": HOSTILE[7], "gate": HOSTILE[8], "outcome": "ANNULLED", "annulReason": HOSTILE[9]}
    assert api.call("GET", "/me/notification-preferences", bob_auth, 200)["push_token"] is True

    # hostile identifiers and cursors are answers, not errors
    assert api.gql("query($id: ID!) { user(id: $id) { id } }", id=HOSTILE[0])["data"]["user"] is None
    assert api.gql("query($id: ID!) { community(id: $id) { id } }", id=HOSTILE[7])["data"]["community"] is None
    for cursor in (HOSTILE[0], "J09SICcxJz0nMQ==", HOSTILE[13]):  # the second: base64 of ' OR '1'='1
        body = api.gql("query($a: String) { feed(after: $a) { edges { cursor } } }", ada_auth, a=cursor)
        assert "errors" not in body or body["errors"][0]["extensions"]["code"] == "INVALID_INPUT", body
    for path in (f"/posts/{HOSTILE[0]}/like", f"/users/{HOSTILE[7]}/follow"):
        assert httpx.put(api.url + path, headers=ada_auth).status_code in (404, 422)

    # the tables hold the very strings (the database compares bytes), and nothing else changed
    with psycopg.connect(base_url.env["ATTENDWISE_DATABASE_URL"]) as db:
        assert sorted(r[0] for r in db.execute("SELECT text FROM rm_posts")) == sorted(as_text(h) for h in HOSTILE)
        assert db.execute("SELECT count(*) FROM rm_users").fetchone()[0] == len(HOSTILE) + 1
        assert db.execute("SELECT count(*) FROM rm_communities").fetchone()[0] == len(HOSTILE) + 1
        assert db.execute("SELECT count(*) FROM rm_sessions WHERE status = 'cancelled'").fetchone()[0] == \
            len(HOSTILE) - 1
        assert db.execute("SELECT name, error FROM projection_errors").fetchall() == []
    ns = base_url.env["ATTENDWISE_NEO4J_NAMESPACE"]
    with neo4j.GraphDatabase.driver(base_url.env["ATTENDWISE_NEO4J_URI"], auth=None) as driver:
        counts = {label: driver.execute_query(f"MATCH (n:{label} {{ns: $ns}}) RETURN count(n) AS n", ns=ns)
                  .records[0]["n"] for label in ("User", "Community", "Post")}
        removed = driver.execute_query("MATCH (p:Post {ns: $ns}) WHERE p.removed RETURN count(p) AS n", ns=ns)
    assert counts == {"User": len(HOSTILE) + 1, "Community": len(HOSTILE) + 1, "Post": len(HOSTILE)}
    assert removed.records[0]["n"] == 0
    login = httpx.post(api.url + "/auth/token", data={"grant_type": "password", "username": "o'neil+x@example.org",
                                                      "password": password})
    assert login.status_code == 200


def test_a_nul_character_is_refused_everywhere_and_nothing_is_recorded(base_url: Stack) -> None:
    api = Client(base_url)
    nul = "before\x00after"
    r = httpx.post(api.url + "/users", json={"email": "nul@example.org", "display_name": nul, "password": PASSWORD})
    assert r.status_code == 422 and r.json()["code"] == "INVALID_INPUT", r.text
    assert r.json()["errors"] == [{"field": "display_name"}]
    ada, auth = api.sign_up("nul@example.org", "Ada")  # the address was not taken by the refused registration
    club = api.call("POST", "/communities", auth, 201, json={"name": "Club"})["id"]
    post = api.call("POST", f"/communities/{club}/posts", auth, 201, json={"text": "fine"})["id"]
    soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=20)).replace(tzinfo=None, second=0, microsecond=0)
    series = {"title": "Lab", "host_ids": [ada], "start": soon.isoformat(), "time_zone": "UTC", "duration_minutes": 60}
    for method, path, body in (
            ("PATCH", "/me", {"display_name": nul}),
            ("POST", "/communities", {"name": nul}),
            ("POST", "/communities", {"name": "Club 2", "description": nul}),
            ("PATCH", f"/communities/{club}", {"description": nul}),
            ("POST", f"/communities/{club}/posts", {"text": nul}),
            ("PATCH", f"/posts/{post}", {"text": nul}),
            ("POST", f"/posts/{post}/comments", {"text": nul}),
            ("POST", "/series", {**series, "title": nul}),
            ("POST", "/series", {**series, "location": {"name": nul}}),
            ("PUT", "/me/notification-preferences", {"push_token": nul})):
        r = httpx.request(method, api.url + path, headers=auth, json=body, timeout=10)
        assert r.status_code == 422 and r.json()["code"] == "INVALID_INPUT", (method, path, r.text)
    created = api.call("POST", "/series", auth, 201, json=series)["series_id"]
    sessions_of = "query($id: ID!) { series(id: $id) { sessions { edges { node { id } } } } }"
    session = eventually(lambda: (api.gql(sessions_of, id=created)["data"]["series"] or {}).get("sessions"))
    session = session["edges"][0]["node"]["id"]
    r = httpx.post(f"{api.url}/sessions/{session}/cancel", headers=auth, json={"reason": nul})
    assert r.status_code == 422, r.text
    bob, bob_auth = api.sign_up("bob@example.org", "Bob")
    api.call("PUT", f"/sessions/{session}/checkin-policy", auth, 204, json={"policy": "qr"})
    api.call("POST", f"/sessions/{session}/places", bob_auth, 200, json={})
    token = api.call("GET", f"/sessions/{session}/ticket", bob_auth, 200)["token"]
    r = httpx.post(api.url + "/checkin", headers=auth, data={"token": token, "device_id": nul})
    assert r.status_code == 422, r.text
    scan = api.call("POST", "/checkin", auth, 200, data={"token": token, "device_id": "door"})
    assert scan["outcome"] == "succeeded"  # the refused scan did not use the ticket
    for path, body in ((f"/checkins/{scan['checkin_id']}/annul", {"reason": nul}),):
        assert httpx.post(api.url + path, headers=auth, json=body).status_code == 422
    assert httpx.put(f"{api.url}/sessions/{session}/attendance/{bob}", headers=auth,
                     json={"present": False, "reason": nul}).status_code == 422

    # every projection kept going: a later change is readable, and none recorded an error
    api.call("PATCH", "/me", auth, 200, json={"display_name": "Ada Lovelace"})
    eventually(lambda: api.gql("{ me { displayName } }", auth)["data"]["me"]["displayName"] == "Ada Lovelace")
    feed = "{ feed { edges { node { text } } } }"
    assert eventually(lambda: api.gql(feed, auth)["data"]["feed"]["edges"]) == [{"node": {"text": "fine"}}]
    with psycopg.connect(base_url.env["ATTENDWISE_DATABASE_URL"]) as db:
        assert db.execute("SELECT name, error FROM projection_errors").fetchall() == []
        assert db.execute("SELECT count(*) FROM rm_communities").fetchone()[0] == 1
