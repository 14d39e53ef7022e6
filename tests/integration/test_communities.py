"""Communities end to end in one process (embedded default): commands over
HTTP, reads over GraphQL after the projectors (read models and the feed
graph) catch up. What a member, an admin and a stranger each see."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.bootstrap import Container, build
from api.http import create_app
from api.settings import Settings
from commands.messages import CommandContext, RegisterUser
from tests.processes import eventually

PASSWORD = "correct horse battery"


def png(width: int = 2, height: int = 2) -> bytes:
    """A real (tiny) PNG image."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


class World:
    def __init__(self, client: TestClient, container: Container) -> None:
        self.client, self.c = client, container
        self.auth: dict[str, dict[str, str]] = {}
        self.ids: dict[str, str] = {}

    def person(self, name: str) -> str:
        email = f"{name}@example.org"
        uid = self.c.app.register_user(RegisterUser(email, name.title(), "UTC", PASSWORD), CommandContext())
        token = self.client.post("/auth/token", data={"grant_type": "password", "username": email,
                                                      "password": PASSWORD}).json()["access_token"]
        self.auth[name], self.ids[name] = {"Authorization": f"Bearer {token}"}, str(uid)
        return str(uid)

    def call(self, who: str, method: str, path: str, expect: int | None = None, **kw: object) -> dict | None:
        r = self.client.request(method, path, headers=self.auth[who], **kw)  # type: ignore[arg-type]
        if expect is not None:
            assert r.status_code == expect, r.text
        return r.json() if r.content else None

    def code(self, who: str, method: str, path: str, **kw: object) -> tuple[int, str | None]:
        r = self.client.request(method, path, headers=self.auth[who], **kw)  # type: ignore[arg-type]
        return r.status_code, (r.json().get("code") if r.content else None)

    def settle(self) -> None:
        """Let every projector reach the head of the log."""
        head = self.c.event_log.head()
        eventually(lambda: all(p.position >= head for p in self.c.projectors.values()) or None)

    def gql(self, who: str | None, query: str, **variables: object) -> dict:
        self.settle()
        headers = self.auth[who] if who else {}
        return self.client.post("/graphql", json={"query": query, "variables": variables}, headers=headers).json()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    container = build(Settings(data_dir=tmp_path, database_url=None, nats_url=None, redis_url=None,
                               neo4j_uri=None, s3_endpoint=None, rate_limits=False))
    with TestClient(create_app(container)) as client:
        yield World(client, container)
    container.close()


FEED = "query($n: Int!, $after: String, $o: FeedOrder) { feed(first: $n, after: $after, order: $o) { edges { node { id text author { displayName } likeCount } } pageInfo { hasNextPage endCursor } } }"
POSTS = "query($id: ID!) { community(id: $id) { memberCount postCount viewerStatus viewerRole posts { edges { node { id text } } } } }"


def codes(body: dict) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors", [])]


def test_a_private_community_admits_by_request_and_shows_its_posts_only_to_members(world: World) -> None:
    w = world
    for name in ("ada", "bob", "eve"):
        w.person(name)
    club = w.call("ada", "POST", "/communities", 201, json={"name": "Night owls", "visibility": "private"})["id"]
    assert w.call("bob", "POST", f"/communities/{club}/join", 200) == {"status": "requested"}
    assert w.code("bob", "POST", f"/communities/{club}/posts", json={"text": "hi"}) == (403, "NOT_A_MEMBER")
    assert w.code("eve", "POST", f"/communities/{club}/requests/{w.ids['bob']}/approve") == (403, "FORBIDDEN")
    requests = w.gql("ada", "query($id: ID!) { community(id: $id) { joinRequests { edges { node { userId status } } } } }", id=club)
    assert requests["data"]["community"]["joinRequests"]["edges"] == [{"node": {"userId": w.ids["bob"], "status": "requested"}}]
    w.call("ada", "POST", f"/communities/{club}/requests/{w.ids['bob']}/approve", 204)
    post = w.call("bob", "POST", f"/communities/{club}/posts", 201, json={"text": "first!"})["id"]
    w.call("eve", "PUT", f"/users/{w.ids['bob']}/follow", 204)  # following the author is not membership

    as_bob = w.gql("bob", POSTS, id=club)["data"]["community"]
    assert as_bob == {"memberCount": 2, "postCount": 1, "viewerStatus": "member", "viewerRole": "member",
                      "posts": {"edges": [{"node": {"id": post, "text": "first!"}}]}}
    as_eve = w.gql("eve", POSTS, id=club)
    assert codes(as_eve) == ["NOT_A_MEMBER"] and as_eve["data"]["community"] is None
    assert w.gql("eve", "query($id: ID!) { post(id: $id) { id } }", id=post)["data"]["post"] is None
    assert w.gql("eve", FEED, n=10)["data"]["feed"]["edges"] == []  # never leaks into a stranger's feed
    assert [e["node"]["id"] for e in w.gql("ada", FEED, n=10)["data"]["feed"]["edges"]] == [post]
    assert w.code("eve", "PUT", f"/posts/{post}/like") == (404, "NOT_FOUND")  # what you cannot see does not exist

    w.call("bob", "POST", f"/communities/{club}/leave", 204)
    assert codes(w.gql("bob", POSTS, id=club)) == ["NOT_A_MEMBER"]
    assert w.gql("ada", POSTS, id=club)["data"]["community"]["memberCount"] == 1


def test_bans_roles_and_who_may_delete(world: World) -> None:
    w = world
    for name in ("ada", "bob", "cat"):
        w.person(name)
    club = w.call("ada", "POST", "/communities", 201, json={"name": "Runners"})["id"]
    for name in ("bob", "cat"):
        assert w.call(name, "POST", f"/communities/{club}/join", 200) == {"status": "member"}
    post = w.call("bob", "POST", f"/communities/{club}/posts", 201, json={"text": "spam"})["id"]
    assert w.code("cat", "DELETE", f"/posts/{post}") == (403, "FORBIDDEN")
    assert w.code("cat", "PATCH", f"/posts/{post}", json={"text": "x"}) == (403, "FORBIDDEN")
    w.call("ada", "PUT", f"/communities/{club}/members/{w.ids['cat']}/role", 204, json={"role": "admin"})
    w.call("cat", "DELETE", f"/posts/{post}", 204)  # a community admin moderates
    w.call("cat", "DELETE", f"/posts/{post}", 204)  # deleting twice is deleting once
    assert w.code("bob", "PATCH", f"/posts/{post}", json={"text": "x"}) == (410, "POST_DELETED")
    w.call("cat", "PUT", f"/communities/{club}/bans/{w.ids['bob']}", 204, json={"reason": "spam"})
    assert w.code("bob", "POST", f"/communities/{club}/join") == (403, "BANNED")
    assert w.code("bob", "POST", f"/communities/{club}/posts", json={"text": "again"}) == (403, "BANNED")
    assert w.code("cat", "PUT", f"/communities/{club}/bans/{w.ids['ada']}", json={}) == (403, "FORBIDDEN")
    body = w.gql("ada", POSTS, id=club)["data"]["community"]
    assert body["postCount"] == 0 and body["posts"]["edges"] == [] and body["memberCount"] == 2
    w.call("ada", "DELETE", f"/communities/{club}/bans/{w.ids['bob']}", 204)
    assert w.call("bob", "POST", f"/communities/{club}/join", 200) == {"status": "member"}


def test_likes_comments_and_replies(world: World) -> None:
    w = world
    for name in ("ada", "bob"):
        w.person(name)
    club = w.call("ada", "POST", "/communities", 201, json={"name": "Chess"})["id"]
    post = w.call("ada", "POST", f"/communities/{club}/posts", 201, json={"text": "Openings?"})["id"]
    for _ in range(2):  # liking twice is one like (bob need not be a member of a public community)
        w.call("bob", "PUT", f"/posts/{post}/like", 204)
    w.call("ada", "PUT", f"/posts/{post}/like", 204)
    w.call("ada", "DELETE", f"/posts/{post}/like", 204)
    w.call("ada", "DELETE", f"/posts/{post}/like", 204)
    top = w.call("bob", "POST", f"/posts/{post}/comments", 201, json={"text": "Sicilian"})["id"]
    reply = w.call("ada", "POST", f"/posts/{post}/comments", 201, json={"text": "Why?", "parent_id": top})["id"]
    w.call("bob", "POST", f"/posts/{post}/comments", 201, json={"text": "Sharp.", "parent_id": reply})
    q = """query($id: ID!) { post(id: $id) { likeCount commentCount viewerLikes
             comments { edges { node { text author { displayName } replies { text parentId } } } } } }"""
    got = w.gql("bob", q, id=post)["data"]["post"]
    assert got["likeCount"] == 1 and got["commentCount"] == 3 and got["viewerLikes"] is True
    assert got["comments"]["edges"] == [{"node": {"text": "Sicilian", "author": {"displayName": "Bob"}, "replies": [
        {"text": "Why?", "parentId": top}, {"text": "Sharp.", "parentId": top}]}}]  # a reply to a reply joins the thread
    assert w.gql("ada", q, id=post)["data"]["post"]["viewerLikes"] is False


def test_a_block_hides_content_both_ways_and_ends_follows(world: World) -> None:
    w = world
    for name in ("ada", "bob", "cat"):
        w.person(name)
    club = w.call("ada", "POST", "/communities", 201, json={"name": "Garden"})["id"]
    for name in ("bob", "cat"):
        w.call(name, "POST", f"/communities/{club}/join", 200)
    bob_post = w.call("bob", "POST", f"/communities/{club}/posts", 201, json={"text": "bob's"})["id"]
    cat_post = w.call("cat", "POST", f"/communities/{club}/posts", 201, json={"text": "cat's"})["id"]
    w.call("cat", "PUT", f"/users/{w.ids['bob']}/follow", 204)
    w.call("bob", "PUT", f"/users/{w.ids['cat']}/block", 204)

    def seen(who: str) -> set[str]:
        feed = {e["node"]["id"] for e in w.gql(who, FEED, n=50)["data"]["feed"]["edges"]}
        listed = {e["node"]["id"] for e in w.gql(who, POSTS, id=club)["data"]["community"]["posts"]["edges"]}
        assert feed == listed
        return feed
    assert seen("bob") == {bob_post} and seen("cat") == {cat_post} and seen("ada") == {bob_post, cat_post}
    assert w.code("cat", "POST", f"/posts/{bob_post}/comments", json={"text": "hey"}) == (404, "NOT_FOUND")
    assert w.code("cat", "PUT", f"/users/{w.ids['bob']}/follow") == (403, "FORBIDDEN")
    follows = w.gql("cat", "{ suggestedPeople { user { id } } }")["data"]["suggestedPeople"]
    assert w.ids["bob"] not in [s["user"]["id"] for s in follows]
    w.call("bob", "DELETE", f"/users/{w.ids['cat']}/block", 204)
    assert seen("cat") == {bob_post, cat_post}  # the follow ended with the block; membership shows both


def test_feed_pages_stay_stable_while_posts_arrive_and_suggestions_count_shared_follows(world: World) -> None:
    w = world
    for name in ("ada", "bob", "cat", "dan"):
        w.person(name)
    club = w.call("bob", "POST", "/communities", 201, json={"name": "Poets"})["id"]
    other = w.call("cat", "POST", "/communities", 201, json={"name": "Painters"})["id"]
    w.call("dan", "POST", f"/communities/{other}/join", 200)
    posts = [w.call("bob", "POST", f"/communities/{club}/posts", 201, json={"text": f"poem {i}"})["id"]
             for i in range(7)]
    for name in ("bob", "cat"):
        w.call("ada", "PUT", f"/users/{w.ids[name]}/follow", 204)
    w.call("bob", "PUT", f"/users/{w.ids['dan']}/follow", 204)
    w.call("cat", "PUT", f"/users/{w.ids['dan']}/follow", 204)
    first = w.gql("ada", FEED, n=3)["data"]["feed"]
    assert [e["node"]["id"] for e in first["edges"]] == posts[::-1][:3]
    w.call("bob", "POST", f"/communities/{club}/posts", 201, json={"text": "late poem"})  # arrives meanwhile
    seen = [e["node"]["id"] for e in first["edges"]]
    after = first["pageInfo"]["endCursor"]
    while after:
        page = w.gql("ada", FEED, n=3, after=after)["data"]["feed"]
        seen += [e["node"]["id"] for e in page["edges"]]
        after = page["pageInfo"]["endCursor"] if page["pageInfo"]["hasNextPage"] else None
    assert seen == posts[::-1]  # no repeat, no skip
    assert codes(w.gql("ada", FEED, n=3, after="bm9wZQ")) == ["INVALID_INPUT"]

    w.call("cat", "PUT", f"/posts/{posts[0]}/like", 204)
    w.call("dan", "PUT", f"/posts/{posts[0]}/like", 204)
    top = w.gql("ada", FEED, n=2, o="TOP")["data"]["feed"]["edges"]
    assert top[0]["node"]["id"] in (posts[0], *posts[-2:])  # likes lift an older post, recency still counts
    people = w.gql("ada", "{ suggestedPeople { user { id } count } }")["data"]["suggestedPeople"]
    assert people == [{"user": {"id": w.ids["dan"]}, "count": 2}]
    groups = w.gql("ada", "{ suggestedCommunities { community { name } count } }")["data"]["suggestedCommunities"]
    assert sorted(groups, key=lambda g: g["community"]["name"]) == [  # ties in id order
        {"community": {"name": "Painters"}, "count": 1}, {"community": {"name": "Poets"}, "count": 1}]
    assert codes(w.gql(None, "{ suggestedPeople { count } }")) == ["TOKEN_INVALID"]


def test_images_are_uploaded_straight_to_storage_and_used_only_once_confirmed(world: World) -> None:
    w = world
    w.person("ada")
    club = w.call("ada", "POST", "/communities", 201, json={"name": "Photos"})["id"]
    image = png()
    ticket = w.call("ada", "POST", "/media/uploads", 201,
                    json={"purpose": "post_image", "content_type": "image/png", "size": len(image)})
    upload = ticket["upload_id"]
    assert w.code("ada", "POST", f"/communities/{club}/posts", json={"text": "look", "media": [upload]}) \
        == (409, "UPLOAD_NOT_CONFIRMED")
    assert w.code("ada", "POST", f"/media/uploads/{upload}/confirm") == (422, "UPLOAD_MISSING")
    r = w.client.post(ticket["url"], data=ticket["fields"], files={"file": ("a.png", image, "image/png")})
    assert r.status_code == 204, r.text
    assert w.call("ada", "POST", f"/media/uploads/{upload}/confirm", 200) == {"upload_id": upload, "size": len(image)}
    post = w.call("ada", "POST", f"/communities/{club}/posts", 201, json={"text": "look", "media": [upload]})["id"]
    url = w.gql("ada", "query($id: ID!) { post(id: $id) { images { uploadId url } } }", id=post)["data"]["post"]["images"]
    assert url[0]["uploadId"] == upload
    assert w.client.get(url[0]["url"]).content == image

    # an avatar must be an avatar upload, and a fake image is refused at confirmation
    assert w.code("ada", "PUT", "/me/avatar", json={"upload_id": upload}) == (422, "INVALID_INPUT")
    fake = w.call("ada", "POST", "/media/uploads", 201, json={"purpose": "avatar", "content_type": "image/png", "size": 9})
    w.client.post(fake["url"], data=fake["fields"], files={"file": ("a.png", b"not a png", "image/png")})
    assert w.code("ada", "POST", f"/media/uploads/{fake['upload_id']}/confirm") == (422, "UPLOAD_WRONG_TYPE")
    avatar = w.call("ada", "POST", "/media/uploads", 201,
                    json={"purpose": "avatar", "content_type": "image/png", "size": len(image)})
    w.client.post(avatar["url"], data=avatar["fields"], files={"file": ("a.png", image, "image/png")})
    w.call("ada", "POST", f"/media/uploads/{avatar['upload_id']}/confirm", 200)
    w.call("ada", "PUT", "/me/avatar", 204, json={"upload_id": avatar["upload_id"]})
    avatar_url = w.gql("ada", "{ me { avatarUrl } }")["data"]["me"]["avatarUrl"]
    assert w.client.get(avatar_url).content == image


def test_a_page_of_posts_with_authors_communities_and_counts_costs_a_constant_number_of_queries(world: World) -> None:
    w = world
    w.person("ada")
    club = w.call("ada", "POST", "/communities", 201, json={"name": "Writers"})["id"]
    q = """query($id: ID!, $n: Int!) { community(id: $id) { memberCount posts(first: $n) { edges { node {
             text likeCount commentCount viewerLikes author { displayName } community { name } } } } } }"""

    def queries_for(n: int) -> int:
        w.gql("ada", q, id=club, n=n)  # settles the projectors first
        before = w.c.readmodels.queries
        body = w.gql("ada", q, id=club, n=n)
        assert len(body["data"]["community"]["posts"]["edges"]) == n
        return w.c.readmodels.queries - before
    for i in range(12):
        post = w.call("ada", "POST", f"/communities/{club}/posts", 201, json={"text": f"chapter {i}"})["id"]
        w.call("ada", "PUT", f"/posts/{post}/like", 204)
    assert queries_for(2) == queries_for(12)  # batched: not one query per post
