"""Communities over HTTP and GraphQL as real processes: on the embedded
default (SQL graph, local media files) and on the full stack (the feed graph
in Neo4j, images in S3 through presigned forms, API, relay and projector as
separate processes)."""

from __future__ import annotations

import httpx

from tests.e2e.conftest import Stack, gql
from tests.e2e.test_scheduling_api import sign_up
from tests.integration.test_communities import png
from tests.processes import eventually

FEED = """query { feed(first: 10) { edges { node { id text author { displayName avatarUrl } images { url }
  community { name } } } } }"""


def test_a_member_posts_an_image_and_followers_and_members_see_it_in_their_feeds(base_url: Stack) -> None:
    ada, ada_auth = sign_up(base_url, "ada@example.org")
    bob, bob_auth = sign_up(base_url, "bob@example.org")
    eve, eve_auth = sign_up(base_url, "eve@example.org")
    public = httpx.post(base_url + "/communities", json={"name": "Cyclists"}, headers=ada_auth).json()["id"]
    private = httpx.post(base_url + "/communities", json={"name": "Board", "visibility": "private"},
                         headers=ada_auth).json()["id"]
    assert httpx.put(f"{base_url}/users/{ada}/follow", headers=bob_auth).status_code == 204
    assert httpx.put(f"{base_url}/users/{ada}/follow", headers=eve_auth).status_code == 204
    assert httpx.post(f"{base_url}/communities/{private}/join", headers=bob_auth).json() == {"status": "requested"}
    assert httpx.post(f"{base_url}/communities/{private}/requests/{bob}/approve", headers=ada_auth).status_code == 204

    image = png(3, 3)
    ticket = httpx.post(base_url + "/media/uploads", headers=ada_auth,
                        json={"purpose": "post_image", "content_type": "image/png", "size": len(image)}).json()
    if base_url.mode == "full":
        assert ticket["url"].startswith("http://127.0.0.1:49000/")  # straight to S3, not through the API
    up = httpx.post(ticket["url"], data=ticket["fields"], files={"file": ("ride.png", image, "image/png")})
    assert up.status_code == 204, up.text
    assert httpx.post(f"{base_url}/media/uploads/{ticket['upload_id']}/confirm", headers=ada_auth).status_code == 200
    ride = httpx.post(f"{base_url}/communities/{public}/posts", headers=ada_auth,
                      json={"text": "Sunday ride", "media": [ticket["upload_id"]]}).json()["id"]
    board = httpx.post(f"{base_url}/communities/{private}/posts", headers=ada_auth,
                       json={"text": "Board minutes"}).json()["id"]

    def feed(auth: dict[str, str], n: int) -> list[dict] | None:
        r = httpx.post(base_url + "/graphql", json={"query": FEED}, headers=auth).json()
        edges = r["data"]["feed"]["edges"]
        return [e["node"] for e in edges] if len(edges) == n else None

    bobs = eventually(lambda: feed(bob_auth, 2))
    assert [p["id"] for p in bobs] == [board, ride]
    assert bobs[1]["community"] == {"name": "Cyclists"} and bobs[1]["author"]["displayName"] == "ada"
    assert httpx.get(bobs[1]["images"][0]["url"]).content == image  # a presigned download
    eves = eventually(lambda: feed(eve_auth, 1))  # a follower outside the private community
    assert [p["id"] for p in eves] == [ride]

    assert httpx.put(f"{base_url}/users/{ada}/block", headers=eve_auth).status_code == 204
    assert eventually(lambda: feed(eve_auth, 0) == [] or None)
    people = gql(base_url, "{ suggestedPeople { user { id } } }")
    assert people["errors"][0]["extensions"]["code"] == "TOKEN_INVALID"
