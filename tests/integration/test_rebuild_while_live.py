"""A rebuild swaps in while writers append and the live projector runs:
afterwards the projection holds exactly what the event store says."""

from __future__ import annotations

import random
import threading
import uuid
from pathlib import Path

from adapters.eventstore import ApplicationEventLog, open_event_store
from adapters.readmodels import PostgresReadModelStore
from commands.messages import ChangeDisplayName, CommandContext, RegisterUser
from projections.projector import Projector
from projections.rebuild import rebuild
from projections.users import UsersProjection
from tests.unit.test_projection_replay import CountingProjection


def test_rebuild_during_writes_and_live_projection(pg_url: str, tmp_path: Path) -> None:
    app = open_event_store(pg_url, tmp_path / "x.sqlite3")
    log = ApplicationEventLog(app)
    store = PostgresReadModelStore(pg_url)
    live = [Projector(UsersProjection(), store), Projector(CountingProjection(), store)]
    ids: list[uuid.UUID] = []
    for i in range(300):
        ids.append(app.register_user(RegisterUser(f"pre{i}@example.org", f"Pre {i}"), CommandContext()))

    writing, following = threading.Event(), threading.Event()
    writing.set()
    following.set()

    def write() -> None:
        rng = random.Random(1)
        while writing.is_set():
            if rng.random() < 0.5:
                ids.append(app.register_user(RegisterUser(f"{uuid.uuid4().hex}@example.org", "New"), CommandContext()))
            else:
                app.change_display_name(ChangeDisplayName(rng.choice(ids), f"Name {rng.random():.6f}"), CommandContext())

    threads = [threading.Thread(target=write)] + [
        threading.Thread(target=p.follow, args=(log, lambda: not following.is_set())) for p in live]
    registered = log.head()
    for t in threads:
        t.start()
    for p in live:  # the live tables hold the first 300 before the rebuild begins
        for _ in range(400):
            if p.position >= registered:
                break
            threading.Event().wait(0.05)
    seen_during: list[int] = []
    for projection in (UsersProjection(), CountingProjection()):
        rebuild(projection, store, log, fresh=True, batch=100,
                progress=lambda pos, head: seen_during.append(len(store.rows("users", limit=300))))
    writing.clear()
    threads[0].join()
    head = log.head()
    for p in live:
        while p.position < head:
            threading.Event().wait(0.05)
    following.clear()
    for t in threads[1:]:
        t.join()

    assert seen_during and min(seen_during) == 300  # readers never saw an empty or partial table
    rows = {r["id"]: r for r in store.rows("users")}
    assert len(rows) == len(ids)
    for uid in ids:
        user = app.get_user(uid)
        assert rows[str(uid)]["display_name"] == user.display_name
        assert rows[str(uid)]["version"] == user.version
    counted = {r["id"]: r["events"] for r in store.rows("event_counts")}
    assert counted == {str(uid): app.get_user(uid).version for uid in ids}  # each event counted once
    store.close()
    app.close()
