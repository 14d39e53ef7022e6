"""The feed graph is a projection like the others: built live from the log by
the projector, and rebuilt from the log by `rebuild`, to the same graph, on
the embedded SQL graph and on Neo4j."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.graph import FeedGraph
from adapters.graph_neo4j import Neo4jFeedGraph
from adapters.graph_sql import SQLiteFeedGraph
from api.bootstrap import Container, build
from api.settings import Settings
from commands.messages import (BlockUser, CommandContext, CreateCommunity, DecideJoinRequest, DeletePost,
                               FollowUser, JoinCommunity, LeaveCommunity, LikePost, PublishPost, RegisterUser)
from domain.errors import DomainError
from projections.projector import Projector
from projections.rebuild import rebuild


@pytest.fixture(params=["sqlite", "neo4j"])
def graph_pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Container, FeedGraph, FeedGraph]]:
    container = build(Settings(data_dir=tmp_path, database_url=None, nats_url=None, redis_url=None,
                               neo4j_uri=None, s3_endpoint=None))
    if request.param == "neo4j":
        uri = request.getfixturevalue("neo4j_uri")
        ns = f"t{uuid.uuid4().hex[:10]}"
        live, rebuilt = Neo4jFeedGraph(uri, namespace=ns), Neo4jFeedGraph(uri, namespace=ns + "r")
    else:
        live, rebuilt = SQLiteFeedGraph(tmp_path / "live.sqlite3"), SQLiteFeedGraph(tmp_path / "rebuilt.sqlite3")
    yield container, live, rebuilt
    for g in (live, rebuilt):
        if hasattr(g, "drop"):
            g.drop()
        g.close()
    container.close()


def random_community_life(container: Container, seed: int, steps: int = 150) -> None:
    """People register, found communities, join and leave, follow, block,
    post, like and delete, in a random order; refused commands are part of life."""
    rnd = random.Random(seed)
    app, now = container.app, dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    people = [app.register_user(RegisterUser(f"p{seed}-{i}@example.org", f"P{i}"), CommandContext()) for i in range(6)]
    ctx = {p: CommandContext.for_user(p) for p in people}
    communities = [app.create_community(CreateCommunity(f"C{i}", visibility=rnd.choice(["public", "private"])),
                                        ctx[people[i]]) for i in range(3)]
    posts: list[uuid.UUID] = []
    for step in range(steps):
        me, other = rnd.sample(people, 2)
        c = rnd.choice(communities)
        action = rnd.randrange(9)
        try:
            if action == 0:
                app.join_community(JoinCommunity(c), ctx[me])
            elif action == 1:
                app.leave_community(LeaveCommunity(c), ctx[me])
            elif action == 2:
                app.decide_join_request(DecideJoinRequest(c, me, rnd.random() < 0.8), ctx[people[communities.index(c)]])
            elif action == 3:
                app.follow_user(FollowUser(other, rnd.random() < 0.8), ctx[me])
            elif action == 4:
                app.block_user(BlockUser(other, rnd.random() < 0.3), ctx[me])
            elif action in (5, 6):
                posts.append(app.publish_post(PublishPost(c, f"post {step}"), ctx[me], now + dt.timedelta(minutes=step)))
            elif action == 7 and posts:
                app.like_post(LikePost(rnd.choice(posts), rnd.random() < 0.8), ctx[me])
            elif action == 8 and posts:
                app.delete_post(DeletePost(rnd.choice(posts)), ctx[me])
        except DomainError:
            pass


@pytest.mark.parametrize("seed", [1, 2])
def test_a_rebuilt_graph_equals_the_live_one(graph_pair: tuple[Container, FeedGraph, FeedGraph], seed: int) -> None:
    container, live, rebuilt = graph_pair
    projection = container.projectors["feed_graph"].projection
    live_projector = Projector(projection, live)  # type: ignore[arg-type]
    random_community_life(container, seed, steps=60)
    live_projector.catch_up(container.event_log, batch=7)  # live, in small batches, while life goes on
    random_community_life(container, seed + 100, steps=60)
    live_projector.catch_up(container.event_log, batch=7)

    Projector(projection, rebuilt).install()  # type: ignore[arg-type]
    position = rebuild(projection, rebuilt, container.event_log)  # type: ignore[arg-type]
    assert position == container.event_log.head() == live.position("feed_graph")
    assert rebuilt.snapshot() == live.snapshot()
    users = live.snapshot().users
    assert users
    for user in users:
        assert rebuilt.feed(user, first=50) == live.feed(user, first=50)
        assert rebuilt.suggested_people(user) == live.suggested_people(user)
