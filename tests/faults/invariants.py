"""What must hold once a stack has recovered from its faults, checked against
the event store, JetStream, the read models, the Neo4j graph, the SMTP sink
and the clients' ledger (tests/faults/workload.py).

`settle` waits until the stack is quiet (relayed, projected, every message
delivered), running the check-in deadline job as cron would after the
deadline. `check` then returns one `Check` per invariant and the counts of
commands lost and duplicated.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.faults.stack import FullStack
from tests.faults.workload import Ledger

VERDICTS = ("CheckInSucceeded", "CheckInFailed")
DONE = ("NotificationSent", "NotificationSkipped", "NotificationGaveUp")
NOTIFICATION_EVENTS = frozenset({"NotificationQueued", "NotificationAttemptStarted", "NotificationAttemptFailed",
                                 "NotificationRequeued", *DONE})


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Verdict:
    checks: list[Check] = field(default_factory=list)
    lost_commands: int = 0  # this ledger's accepted commands the log lacks (or told outcomes it lacks)
    duplicated_commands: int = 0  # this ledger's commands whose events are there twice, or that ran twice
    lost_state: int = 0  # events the stream lacks, messages never delivered (the whole stack so far)
    duplicated_state: int = 0  # a nonce admitted twice, events twice in the stream, a message sent twice
    resent: int = 0  # one message delivered again with its Message-ID (a notifier killed mid-send)
    applied_unanswered: int = 0  # commands the client gave up on that the log holds once

    def add(self, name: str, problems: list[str], ok_detail: str = "") -> None:
        self.checks.append(Check(name, not problems, "; ".join(problems[:5]) + (
            f" (+{len(problems) - 5} more)" if len(problems) > 5 else "") if problems else ok_detail))

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


def _jetstream_positions(url: str, namespace: str) -> list[int]:
    """Every message's log position, in stream order."""
    from adapters.bus import JetStreamBus

    async def read() -> list[int]:
        bus = await JetStreamBus.connect(url, namespace=namespace)
        try:
            last = (await bus.last())[0]
            out: list[int] = []
            if last:
                it = bus.stream(1)
                async for seq, env in it:
                    out.append(env.position)
                    if seq >= last:
                        break
                await it.aclose()
            return out
        finally:
            await bus.close()

    return asyncio.run(read())


def _relayed(stack: FullStack) -> int:
    from adapters.bus import JetStreamBus

    async def last() -> int:
        bus = await JetStreamBus.connect(stack.nats.url, namespace=stack.env.get("ATTENDWISE_NATS_NAMESPACE", ""),
                                         timeout=2)
        try:
            return (await bus.last())[1]
        finally:
            await bus.close()

    return asyncio.run(last())


def settle(stack: FullStack, clients_stopped: float, timeout: float = 90.0, quiet: float = 1.5) -> dict[str, float]:
    """Wait until every event is relayed and projected and every queued
    message has a final state; fail the pending face check-ins as the cron
    job (`attendwise checkins fail-overdue`) would after the deadline.
    `clients_stopped`: when the last request was sent (time.monotonic()).
    Returns how long each stage took (for the report)."""
    from api.jobs import fail_overdue_checkins
    from commands.attendance import VERIFY_DEADLINE, VERIFY_TIMEOUT

    started = time.monotonic()
    timings: dict[str, float] = {}
    face_timeout = float(stack.env.get("ATTENDWISE_FACE_TIMEOUT", "10"))
    with stack.container() as c:
        def caught_up() -> tuple[bool, str]:
            head = c.event_log.head()
            behind = {n: p.position for n, p in c.projectors.items() if p.position < head}
            relayed = _relayed(stack)
            open_ = _undelivered(c)
            return (not behind and relayed == head and not open_,
                    f"head {head}, relayed {relayed}, behind {behind}, undelivered {len(open_)}")

        def wait(stage: str) -> None:
            deadline, calm_since, t = time.monotonic() + timeout, None, time.monotonic()
            state = ""
            while time.monotonic() < deadline:
                try:
                    done, state = caught_up()
                except Exception as e:  # noqa: BLE001 - a service still coming back
                    done, state = False, f"{type(e).__name__}: {e}"
                if done:
                    calm_since = calm_since or time.monotonic()
                    if time.monotonic() - calm_since >= quiet:
                        timings[stage] = time.monotonic() - t
                        return
                else:
                    calm_since = None
                time.sleep(0.3)
            raise AssertionError(f"the stack did not settle ({stage}) within {timeout:.0f}s: {state}")

        # late face verdicts land first: a scan answers "pending" after VERIFY_TIMEOUT, its worker's answer
        # can come until the face timeout
        late = max(0.0, face_timeout - VERIFY_TIMEOUT) + 1
        time.sleep(max(0.0, clients_stopped + late - time.monotonic()))
        wait("relayed, projected, delivered")
        failed = fail_overdue_checkins(c, c.clock() + VERIFY_DEADLINE + dt.timedelta(seconds=1))
        timings["overdue check-ins failed by the deadline job"] = failed
        if failed:
            wait("after the deadline job")
    timings["settled in (s)"] = time.monotonic() - started
    return timings


def _undelivered(c: Any) -> list[str]:
    """Notifications whose last event is not final (sent, skipped, gave up)."""
    last: dict[str, str] = {}
    for e in c.event_log.read(0, 10_000_000):
        if e.event_type in NOTIFICATION_EVENTS:
            last[e.aggregate_id] = e.event_type
    return [k for k, t in last.items() if t not in DONE]


def check(stack: FullStack, ledger: Ledger, notifier_kills: int = 0) -> Verdict:
    from domain.notifications import notification_id

    v = Verdict()
    with stack.container() as c:
        events = c.event_log.read(0, 10_000_000)
        by_aggregate: dict[str, list[Any]] = defaultdict(list)
        for e in events:
            by_aggregate[e.aggregate_id].append(e)
        types = lambda agg, t: [e for e in by_aggregate.get(agg, ()) if e.event_type == t]  # noqa: E731

        # -- 1. accepted commands: their events are in the log, once
        problems: list[str] = []
        lost = dup = 0
        for u in ledger.accepted.get("user", []):
            n = len([e for e in types(u["id"], "UserRegistered") if e.command_id == u["command_id"]])
            lost, dup = lost + (n == 0), dup + max(n - 1, 0)
            if n != 1:
                problems.append(f"user {u['id']}: UserRegistered x{n}")
        for s in ledger.accepted.get("series", []):
            n = len(types(s["id"], "SeriesCreated"))
            lost, dup = lost + (n == 0), dup + max(n - 1, 0)
            if n != 1:
                problems.append(f"series {s['id']}: SeriesCreated x{n}")
        posts_by_text = Counter(e.data.get("text") for e in events if e.event_type == "PostPublished")
        for p in ledger.accepted.get("post", []):
            n = len(types(p["id"], "PostPublished"))
            lost += n == 0
            if n != 1:
                problems.append(f"post {p['id']}: PostPublished x{n}")
            if posts_by_text[p["marker"]] > 1:  # a retry that ran as a second command
                dup += posts_by_text[p["marker"]] - 1
                problems.append(f"post {p['marker']!r} published {posts_by_text[p['marker']]} times")
        for p in ledger.unacknowledged.get("post", []):
            n = posts_by_text[p["marker"]]
            dup += max(n - 1, 0)
            v.applied_unanswered += n == 1
        nonces = Counter(e.data["nonce"] for e in events if e.event_type in ("TicketIssued", "TicketReissued"))
        for t in ledger.accepted.get("ticket", []):
            n = nonces[t["nonce"]]
            lost, dup = lost + (n == 0), dup + max(n - 1, 0)
            if n != 1:
                problems.append(f"ticket nonce {t['nonce']}: issued x{n}")
        for ci in ledger.accepted.get("checkin", []):
            attempted = len(types(ci["id"], "CheckInAttempted"))
            verdicts = [e.event_type for e in by_aggregate.get(ci["id"], ()) if e.event_type in VERDICTS]
            lost += attempted == 0
            dup += max(attempted - 1, 0) + max(len(verdicts) - 1, 0)
            told = {"succeeded": "CheckInSucceeded", "failed": "CheckInFailed"}.get(ci["outcome"])
            if attempted != 1 or len(verdicts) != 1 or (told and verdicts != [told]):
                lost += bool(told) and told not in verdicts
                problems.append(f"check-in {ci['id']} ({ci['outcome']}): attempted x{attempted}, verdicts {verdicts}")
        v.add("every accepted command's events are in the event store exactly once", problems,
              ", ".join(f"{len(ledger.accepted.get(k, []))} {label}" for k, label in (
                  ("user", "registrations"), ("post", "posts"), ("series", "series"), ("ticket", "tickets"),
                  ("checkin", "check-ins"))))
        v.lost_commands, v.duplicated_commands = lost, dup

        # -- 2. no check-in accepted twice, none left pending
        nonce_of = {e.data["checkin_id"]: (e.aggregate_id, e.data["nonce"]) for e in events
                    if e.event_type == "TicketNonceUsed"}
        used = Counter(nonce_of.get(e.aggregate_id) for e in events if e.event_type == "CheckInSucceeded")
        twice = [f"{k}: {n} successes" for k, n in used.items() if n > 1]
        client_twice = [n for n, k in Counter(ci["nonce"] for ci in ledger.accepted.get("checkin", [])
                                                if ci["outcome"] == "succeeded").items() if k > 1]
        v.duplicated_state += sum(n - 1 for n in used.values() if n > 1)
        v.duplicated_commands += len(client_twice)
        v.add("no ticket (nonce) admitted twice", twice + [f"client told twice: {n}" for n in client_twice],
              f"{sum(used.values())} successful check-ins, {len(nonce_of)} nonces used")
        attempts = {e.aggregate_id for e in events if e.event_type == "CheckInAttempted"}
        decided = Counter(e.aggregate_id for e in events if e.event_type in VERDICTS)
        pending = sorted(attempts - set(decided))
        reasons = {e.aggregate_id: e.data.get("reason") for e in events if e.event_type in VERDICTS}
        told_pending = [ci["id"] for ci in ledger.accepted.get("checkin", []) if ci["outcome"] == "pending"]
        late = sum(1 for c in told_pending if reasons.get(c) not in (None, "VERIFICATION_TIMEOUT"))
        v.add("every check-in attempt has exactly one verdict (none left pending after the deadline job)",
              [f"{a} pending" for a in pending] + [f"{a}: {n} verdicts" for a, n in decided.items() if n > 1],
              f"{len(attempts)} attempts; this test's clients were answered 202 pending {len(told_pending)} times: "
              f"{late} settled by the face worker's late answer, {len(told_pending) - late} failed at the deadline")

        # -- 3. JetStream holds the log, each event once, in order
        stream = _jetstream_positions(stack.nats.url, stack.env.get("ATTENDWISE_NATS_NAMESPACE", ""))
        log_positions = [e.position for e in events]
        extra = len(stream) - len(set(stream))
        v.duplicated_state += extra
        v.lost_state += len(set(log_positions) - set(stream))
        v.add("JetStream holds every event of the log exactly once, in log order",
              [] if stream == log_positions else
              [f"stream {len(stream)} messages ({extra} repeated), log {len(log_positions)} events"],
              f"{len(stream)} messages")

        # -- 4. read models and the graph equal a fresh replay
        v.checks += _projections_equal_replay(c)

        # -- 5. notifications: every cause told once, delivered
        queued = {e.aggregate_id for e in events if e.event_type == "NotificationQueued"}
        expected: set[str] = set()
        checkin = {e.aggregate_id: e.data for e in events if e.event_type == "CheckInAttempted"}
        for e in events:
            if e.event_type == "UserRegistered":
                expected.add(str(notification_id(e.event_id, "email_verification", "email", e.aggregate_id)))
            elif e.event_type in VERDICTS and checkin.get(e.aggregate_id, {}).get("direction") == "in":
                kind = "checkin_succeeded" if e.event_type == "CheckInSucceeded" else "checkin_failed"
                expected.add(str(notification_id(e.event_id, kind, "email", checkin[e.aggregate_id]["user_id"])))
        missing = sorted(expected - queued)
        sent = Counter(e.aggregate_id for e in events if e.event_type == "NotificationSent")
        undelivered = _undelivered(c)
        received = Counter(str(m["Message-ID"]).strip("<>").split("@")[0] for m in stack.smtp.messages())
        not_received = sorted(n for n in sent if n not in received)
        phantom = sorted(m for m in received if m not in queued)
        sent_twice = {n: k for n, k in sent.items() if k > 1}
        v.lost_state += len(missing) + len(undelivered) + len(not_received)
        v.duplicated_state += sum(k - 1 for k in sent_twice.values()) + len(phantom)
        v.resent = sum(k - 1 for k in received.values())
        v.add("every notification cause queued one message, each delivered once (no duplicate)",
              [f"no notification for cause {m}" for m in missing] + [f"{n} never delivered" for n in undelivered]
              + [f"{n} recorded sent, not received" for n in not_received]
              + [f"{n} sent {k} times" for n, k in sent_twice.items()] + [f"unknown message {m}" for m in phantom],
              f"{len(queued)} notifications, {len(received)} distinct messages received")
        lapsed = {n: _lapsed_attempts(by_aggregate.get(n, ())) for n, k in received.items() if k > 1}
        unexcused = [f"{n} received {received[n]} times, {k} lapsed attempts"
                     for n, k in lapsed.items() if received[n] - 1 > k]
        v.add("a message is resent (same Message-ID) only after an attempt's outcome went unrecorded until its "
              "lease ran out (a notifier killed mid-send, or the event store down when it recorded the send)",
              unexcused, f"{v.resent} resent; {notifier_kills} notifier kills")

    # -- 6. the processes: each one restarted after its faults is running, none exited by itself
    exited = [f"{p.log_path.stem} exited with {p.p.returncode}" for p in stack.all_procs()
              if p.p is None or p.p.poll() is not None]
    v.add("every process of the stack is running (none exited by itself)", exited,
          f"{len(stack.all_procs())} processes")

    # -- 7. the clients: an answer to every request, success or a clear error
    failures = ledger.failures()
    v.add("every request got a success or a clear error (503 + Retry-After, a coded refusal), never a hang or a 500",
          [f"{a.op}: {a.outcome} after {a.seconds:.1f}s" for a in failures],
          f"{len(ledger.answers)} requests")
    return v


def _lapsed_attempts(history: Any) -> int:
    """Attempts on one notification whose outcome was never recorded and that
    a later attempt took over once their lease had run out: the only attempts
    that may have reached the provider without the log knowing."""
    lapsed, open_lease = 0, None
    for e in history:
        if e.event_type == "NotificationAttemptStarted":
            if open_lease is not None and dt.datetime.fromisoformat(e.timestamp) >= open_lease:
                lapsed += 1
            open_lease = dt.datetime.fromisoformat(str(e.data["lease_until"]))
        elif e.event_type in NOTIFICATION_EVENTS:
            open_lease = None
    return lapsed


def _projections_equal_replay(c: Any) -> list[Check]:
    from adapters.graph_sql import SQLiteFeedGraph
    from projections.verify import verify, verify_graph

    out = []
    for name, projector in c.projectors.items():
        if projector.projection.tables:
            result = verify(projector.projection, projector.store, c.event_log)
        else:
            with tempfile.TemporaryDirectory(prefix="attendwise-verify-") as folder:
                scratch = SQLiteFeedGraph(Path(folder) / "graph.sqlite3")
                try:
                    result = verify_graph(projector.projection, projector.store, c.event_log, scratch)
                finally:
                    scratch.close()
        where = "the Neo4j graph" if not projector.projection.tables else f"read model `{name}`"
        out.append(Check(f"{where} equals a fresh replay of the log", result.ok,
                         f"at position {result.position}" if result.ok else
                         "; ".join(str(d) for d in result.differences[:5])))
    return out
