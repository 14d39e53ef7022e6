"""Auditing check-ins (issue #9) in one process (embedded default): a history
made by the real flows over HTTP (places, tickets, QR scans, a refused
replay, an annulment, a host's override, notifications sent by the embedded
notifier), then read back from the event store by `attendwise audit
checkins` (in-process and as a subprocess) and by GraphQL for an auditor.
The door clock is the container's, moved by the test; event timestamps are
the real clock, which is what `--as-of` compares."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.bootstrap import build
from api.cli import main
from api.http import create_app
from api.settings import Settings
from commands.messages import CommandContext
from tests.e2e.test_cli import attendwise
from tests.integration.test_checkin import START, Clock, scan, series, ticket
from tests.integration.test_communities import PASSWORD, World, eventually

CHECKINS = """query($s: ID, $u: ID, $from: String, $to: String, $n: Int, $after: String) {
  auditCheckIns(sessionId: $s, userId: $u, from: $from, to: $to, first: $n, after: $after) {
    edges { cursor node { kind checkInId position userName outcome reason gate
                          entries { event actor actorName details { name value } } } }
    pageInfo { hasNextPage endCursor } } }"""
ATTENDANCE = """query($s: ID!, $t: String!) { auditAttendance(sessionId: $s, asOf: $t) {
  title members { userName standing attended inside gate lastVerdict lastReason markedBy markReason }
  counts { members confirmed attended inside attempts succeeded failed annulled } } }"""


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


@dataclass
class History:
    w: World
    data_dir: Path
    session: str  # the session everything happens at
    other: str  # another session ann checks in at
    ids: dict[str, str]  # check-in ids by name
    before_entry: str  # real instants around ann's entry
    after_entry: str
    end: str


def verdict_notifications_done(w: World) -> bool:
    """Every entry verdict has its notification queued and sent."""
    log = w.c.event_log.read(0, 1_000_000)
    entering = {e.aggregate_id for e in log if e.event_type == "CheckInAttempted" and e.data["direction"] == "in"
                and e.data["user_id"]}
    verdicts = {e.event_id for e in log if e.event_type in ("CheckInSucceeded", "CheckInFailed")
                and e.aggregate_id in entering}
    queued = {e.aggregate_id for e in log if e.event_type == "NotificationQueued" and e.data["source"] in verdicts}
    sources = {e.data["source"] for e in log if e.event_type == "NotificationQueued"}
    sent = {e.aggregate_id for e in log if e.event_type == "NotificationSent"}
    return bool(verdicts) and verdicts <= sources and queued <= sent


@pytest.fixture
def history(tmp_path: Path) -> Iterator[History]:
    container = build(Settings(data_dir=tmp_path, database_url=None, nats_url=None, redis_url=None,
                               neo4j_uri=None, s3_endpoint=None, rate_limits=False, smtp_url=None,
                               push_webhook_url=None, sms_webhook_url=None))  # messages go to the outbox
    clock = Clock(START - dt.timedelta(days=7))
    container.clock = clock
    with TestClient(create_app(container)) as client:
        w = World(client, container)
        for name in ("host", "ann", "ben", "cy", "aud", "eve"):
            w.person(name)
        sid = series(w, "host", count=1)[0]
        other = series(w, "host", count=1)[0]
        for name in ("ann", "ben", "cy"):
            w.call(name, "POST", f"/sessions/{sid}/places", 200, json={})
        w.call("ann", "POST", f"/sessions/{other}/places", 200, json={})
        ann_ticket = ticket(w, "ann", sid)
        ids: dict[str, str] = {}

        clock.now = START - dt.timedelta(minutes=10)
        before_entry = now()
        status, body = scan(w, "host", ann_ticket, gate="north")
        after_entry = now()
        assert status == 200 and body["outcome"] == "succeeded"
        ids["ann_in"] = body["checkin_id"]
        assert scan(w, "host", ann_ticket)[1]["code"] == "TICKET_ALREADY_USED"  # a replay, refused

        clock.now = START - dt.timedelta(minutes=5)
        ben_ticket = ticket(w, "ben", sid)
        ids["ben_in"] = scan(w, "host", ben_ticket, gate="south")[1]["checkin_id"]
        assert scan(w, "host", ben_ticket, gate="south")[1]["code"] == "TICKET_ALREADY_USED"
        w.call("host", "POST", f"/checkins/{ids['ben_in']}/annul", 204, json={"reason": "scanned the wrong person"})
        w.call("host", "PUT", f"/sessions/{sid}/attendance/{w.ids['cy']}", 204,
               json={"present": True, "reason": "forgot phone"})
        ids["ann_other"] = scan(w, "host", ticket(w, "ann", other))[1]["checkin_id"]

        clock.now = START + dt.timedelta(minutes=30)
        ids["ann_out"] = scan(w, "host", ticket(w, "ann", sid), direction="out", gate="north")[1]["checkin_id"]
        eventually(lambda: verdict_notifications_done(w))
        yield History(w, tmp_path, sid, other, ids, before_entry, after_entry, now())
    container.close()


@pytest.fixture
def cli(history: History, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """`attendwise ...` in this process, on the history's data folder: (exit code, stdout, stderr)."""
    for key in [k for k in os.environ if k.startswith("ATTENDWISE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("ATTENDWISE_DATA_DIR", str(history.data_dir))
    monkeypatch.setattr("api.logs.configure", lambda *_, **__: None)  # keep this process's logging as it is

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err
    return run


def events(story: dict) -> list[str]:
    return [e["event"] for e in story["entries"]]


def test_the_story_of_each_check_in_comes_from_the_event_store(history: History, cli) -> None:  # type: ignore[no-untyped-def]
    h, w = history, history.w
    code, out, err = cli("audit", "checkins", "--session", h.session, "--format", "json")
    assert code == 0, err
    stories = json.loads(out)
    host = f"user:{w.ids['host']}"
    assert [(s["kind"], s["user_name"], s["outcome"], s["reason"]) for s in stories] == [
        ("checkin", "Ann", "succeeded", "OK"),
        ("checkin", "Ann", "failed", "TICKET_ALREADY_USED"),
        ("checkin", "Ben", "annulled", "scanned the wrong person"),
        ("checkin", "Ben", "failed", "TICKET_ALREADY_USED"),
        ("override", "Cy", "marked present", "forgot phone"),
        ("checkin", "Ann", "succeeded", "OK"),
    ]
    ann_in, replay, ben, ben_replay, cy, ann_out = stories
    assert list(ann_in) == ["checkin_id", "kind", "position", "session_id", "user_id", "user_name", "ticket_id",
                            "device_id", "gate", "direction", "policy", "scanned_at", "received_at", "offline",
                            "outcome", "reason", "confidence", "distance", "threshold", "model", "model_version",
                            "entries"]
    assert (ann_in["checkin_id"], ann_in["device_id"], ann_in["gate"], ann_in["direction"], ann_in["policy"],
            ann_in["offline"]) == (h.ids["ann_in"], "door-1", "north", "in", "qr", False)
    assert ann_in["received_at"].startswith("2031-03-04T17:50")
    assert events(ann_in) == ["TicketIssued", "TicketNonceUsed", "CheckInAttempted", "CheckInSucceeded",
                              "PresenceEntered", "NotificationQueued", "NotificationSent"]
    issued, used = ann_in["entries"][0]["details"], ann_in["entries"][1]["details"]
    assert issued["nonce_ref"] == used["nonce_ref"] and len(used["nonce_ref"]) == 12
    assert used["checkin_id"] == h.ids["ann_in"]
    queued = ann_in["entries"][5]
    assert queued["details"]["kind"] == "checkin_succeeded" and queued["details"]["recipient_id"] == w.ids["ann"]
    assert all(e["position"] and e["at"] and e["actor"] for e in ann_in["entries"])
    assert ann_in["entries"][2]["actor"] == host and ann_in["entries"][2]["actor_name"] == "Host"
    assert [e["position"] for e in ann_in["entries"]] == sorted(e["position"] for e in ann_in["entries"])

    # the replay: the same issue of the ticket, no nonce used, a failure notified
    assert events(replay) == ["TicketIssued", "CheckInAttempted", "CheckInFailed", "NotificationQueued",
                              "NotificationSent"]
    assert replay["entries"][0]["details"]["nonce_ref"] == issued["nonce_ref"]
    assert replay["entries"][3]["details"]["kind"] == "checkin_failed"

    annul = next(e for e in ben["entries"] if e["event"] == "CheckInAnnulled")
    assert (annul["actor"], annul["details"]) == (host, {"by": host, "reason": "scanned the wrong person"})
    marked = next(e for e in ben["entries"] if e["event"] == "PresenceMarkedAbsent")
    assert marked["details"] == {"by": host, "reason": "check-in annulled: scanned the wrong person"}
    assert ben["gate"] == "south" and ben["user_id"] == w.ids["ben"]
    assert events(ben_replay) == ["TicketIssued", "CheckInAttempted", "CheckInFailed", "NotificationQueued",
                                  "NotificationSent"]  # the annulment's marking stays with the annulled check-in

    assert cy["checkin_id"] is None and events(cy) == ["PresenceMarkedPresent"]
    assert cy["entries"][0]["details"] == {"by": host, "reason": "forgot phone"}

    assert ann_out["direction"] == "out"
    assert events(ann_out) == ["TicketReissued", "TicketNonceUsed", "CheckInAttempted", "CheckInSucceeded",
                               "PresenceExited"]  # no message for leaving
    assert ann_out["entries"][0]["details"]["nonce_ref"] != issued["nonce_ref"]  # a fresh nonce


def test_filters_by_member_and_receive_time_and_usage_errors(history: History, cli) -> None:  # type: ignore[no-untyped-def]
    h, w = history, history.w
    ann = json.loads(cli("audit", "checkins", "--user", w.ids["ann"], "--format", "json")[1])
    assert [s["checkin_id"] for s in ann] == [h.ids["ann_in"], ann[1]["checkin_id"], h.ids["ann_other"],
                                             h.ids["ann_out"]]
    assert {s["session_id"] for s in ann} == {h.session, h.other}
    both = json.loads(cli("audit", "checkins", "--session", h.session, "--user", w.ids["ann"], "--format", "json")[1])
    assert len(both) == 3 and h.ids["ann_other"] not in [s["checkin_id"] for s in both]

    window = json.loads(cli("audit", "checkins", "--session", h.session, "--from", "2031-03-04T17:53:00Z",
                            "--to", "2031-03-04T18:00:00+00:00", "--format", "json")[1])
    assert [(s["user_name"], s["outcome"]) for s in window] == [("Ben", "annulled"), ("Ben", "failed")]
    assert window[0]["checkin_id"] == h.ids["ben_in"]

    code, _, err = cli("audit", "checkins")
    assert code == 2 and "name a session" in err
    code, _, err = cli("audit", "checkins", "--session", h.session, "--as-of", "2031-03-04 18:00")
    assert code == 2 and "offset" in err
    code, _, err = cli("audit", "checkins", "--session", "nope", "--format", "json")
    assert code == 2 and "session is not an id" in err


def test_csv_and_table_render_every_entry(history: History, cli) -> None:  # type: ignore[no-untyped-def]
    h, w = history, history.w
    code, out, _ = cli("audit", "checkins", "--session", h.session, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and list(rows[0]) == ["checkin_id", "kind", "session_id", "user_id", "user_name", "outcome",
                                           "reason", "position", "at", "actor", "actor_name", "event", "event_id",
                                           "summary", "details"]
    stories = json.loads(cli("audit", "checkins", "--session", h.session, "--format", "json")[1])
    assert len(rows) == sum(len(s["entries"]) for s in stories)
    annulled = next(r for r in rows if r["event"] == "CheckInAnnulled")
    assert (annulled["checkin_id"], annulled["user_name"], annulled["actor"]) == (
        h.ids["ben_in"], "Ben", f"user:{w.ids['host']}")
    assert json.loads(annulled["details"])["reason"] == "scanned the wrong person"

    code, out, _ = cli("audit", "checkins", "--session", h.session, "--format", "table")
    assert code == 0
    assert f"check-in {h.ids['ann_in']} · Ann ({w.ids['ann']}) · succeeded OK" in out
    assert "TICKET_ALREADY_USED" in out and "host override · Cy" in out and "forgot phone" in out
    assert "annulled by user:" in out and "6 check-in stories" in out


def test_as_of_shows_attendance_as_it_was(history: History, cli) -> None:  # type: ignore[no-untyped-def]
    h = history

    def at(instant: str) -> dict:
        code, out, err = cli("audit", "checkins", "--session", h.session, "--as-of", instant, "--format", "json")
        assert code == 0, err
        snapshot = json.loads(out)
        snapshot["by_name"] = {m["user_name"]: m for m in snapshot["members"]}
        return snapshot

    before, after, end = at(h.before_entry), at(h.after_entry), at(h.end)
    assert before["title"] == "Choir" and sorted(before["by_name"]) == ["Ann", "Ben", "Cy"]
    ann = before["by_name"]["Ann"]
    assert (ann["standing"], ann["attended"], ann["inside"], ann["last_verdict"]) == ("confirmed", False, False, None)
    assert before["counts"] == {"members": 3, "confirmed": 3, "waitlisted": 0, "attended": 0, "inside": 0,
                                "attempts": 0, "succeeded": 0, "failed": 0, "conflicts": 0, "annulled": 0,
                                "pending": 0}
    ann = after["by_name"]["Ann"]
    assert (ann["attended"], ann["inside"], ann["gate"], ann["last_verdict"], ann["last_reason"]) == (
        True, True, "north", "succeeded", "OK")
    assert (after["counts"]["attended"], after["counts"]["inside"], after["counts"]["attempts"]) == (1, 1, 1)

    ann, ben, cy = (end["by_name"][n] for n in ("Ann", "Ben", "Cy"))
    assert (ann["attended"], ann["inside"], ann["last_verdict"]) == (True, False, "succeeded")  # left at the end
    assert (ben["attended"], ben["last_verdict"], ben["last_reason"]) == (False, "annulled", "scanned the wrong person")
    assert (cy["attended"], cy["last_verdict"], cy["mark_reason"]) == (True, None, "forgot phone")
    assert {k: end["counts"][k] for k in ("attended", "inside", "attempts", "succeeded", "failed", "annulled")} == {
        "attended": 2, "inside": 0, "attempts": 5, "succeeded": 2, "failed": 2, "annulled": 1}

    code, out, _ = cli("audit", "checkins", "--session", h.session, "--as-of", h.after_entry, "--format", "table")
    assert code == 0 and "inside now" in out and "yes (north)" in out
    code, out, _ = cli("audit", "checkins", "--session", h.session, "--as-of", h.end, "--format", "csv")
    rows = {r["user_name"]: r for r in csv.DictReader(io.StringIO(out))}
    assert rows["Ben"]["last_verdict"] == "annulled" and rows["Cy"]["attended"] == "True"


def test_the_real_command_line_prints_the_same_json(history: History) -> None:
    h = history
    out = attendwise("audit", "checkins", "--user", h.w.ids["ben"], "--format", "json",
                     env={"ATTENDWISE_DATA_DIR": str(h.data_dir)})
    assert out.returncode == 0, out.stderr
    ben, replay = json.loads(out.stdout)
    assert (ben["checkin_id"], ben["outcome"], ben["user_name"]) == (h.ids["ben_in"], "annulled", "Ben")
    assert (replay["outcome"], replay["reason"]) == ("failed", "TICKET_ALREADY_USED")


def codes(body: dict) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors", [])]


def sign_in_again(w: World, name: str) -> None:
    token = w.client.post("/auth/token", data={"grant_type": "password", "username": f"{name}@example.org",
                                               "password": PASSWORD}).json()["access_token"]
    w.auth[name] = {"Authorization": f"Bearer {token}"}


def test_graphql_is_for_auditors_and_pages_by_log_position(history: History) -> None:
    h, w = history, history.w
    assert codes(w.gql(None, CHECKINS, s=h.session)) == ["TOKEN_INVALID"]
    assert codes(w.gql("eve", CHECKINS, s=h.session)) == ["FORBIDDEN"]
    assert codes(w.gql("host", ATTENDANCE, s=h.session, t=h.end)) == ["FORBIDDEN"]  # hosting is not auditing
    w.c.app.grant_role(uuid.UUID(w.ids["aud"]), "auditor", CommandContext.system("operator"))
    assert codes(w.gql("aud", CHECKINS, s=h.session)) == ["FORBIDDEN"]  # the old token has no such role
    sign_in_again(w, "aud")

    seen, after, pages = [], None, 0
    while True:
        body = w.gql("aud", CHECKINS, s=h.session, n=2, after=after)
        assert "errors" not in body, body
        page = body["data"]["auditCheckIns"]
        seen += [e["node"] for e in page["edges"]]
        pages += 1
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert pages == 3 and [n["checkInId"] for n in seen] == [h.ids["ann_in"], seen[1]["checkInId"], h.ids["ben_in"],
                                                             seen[3]["checkInId"], None, h.ids["ann_out"]]
    assert [n["reason"] for n in (seen[1], seen[3])] == ["TICKET_ALREADY_USED"] * 2
    assert [n["position"] for n in seen] == sorted(n["position"] for n in seen)
    ben = seen[2]
    assert (ben["userName"], ben["outcome"], ben["reason"], ben["gate"]) == ("Ben", "annulled",
                                                                             "scanned the wrong person", "south")
    annul = next(e for e in ben["entries"] if e["event"] == "CheckInAnnulled")
    assert annul["actorName"] == "Host" and {"name": "reason", "value": '"scanned the wrong person"'} in annul["details"]
    assert seen[4]["kind"] == "override" and seen[4]["outcome"] == "marked present"

    mine = w.gql("aud", CHECKINS, u=w.ids["ann"], n=10, **{"from": "2031-03-04T17:55:00Z"})
    assert [e["node"]["checkInId"] for e in mine["data"]["auditCheckIns"]["edges"]] == [h.ids["ann_other"],
                                                                                        h.ids["ann_out"]]
    assert codes(w.gql("aud", CHECKINS, n=5)) == ["INVALID_INPUT"]  # neither a session nor a member
    assert codes(w.gql("aud", CHECKINS, s=h.session, after="not-a-cursor")) == ["INVALID_INPUT"]

    before = w.gql("aud", ATTENDANCE, s=h.session, t=h.before_entry)["data"]["auditAttendance"]
    after_entry = w.gql("aud", ATTENDANCE, s=h.session, t=h.after_entry)["data"]["auditAttendance"]
    assert before["title"] == "Choir" and before["counts"]["attended"] == 0
    assert after_entry["counts"] == {"members": 3, "confirmed": 3, "attended": 1, "inside": 1, "attempts": 1,
                                     "succeeded": 1, "failed": 0, "annulled": 0}
    ann = next(m for m in after_entry["members"] if m["userName"] == "Ann")
    assert (ann["attended"], ann["inside"], ann["gate"], ann["lastVerdict"]) == (True, True, "north", "succeeded")
    assert codes(w.gql("aud", ATTENDANCE, s=h.session, t="yesterday")) == ["INVALID_INPUT"]

    w.c.app.grant_role(uuid.UUID(w.ids["host"]), "platform_admin", CommandContext.system("operator"))
    sign_in_again(w, "host")
    as_admin = w.gql("host", ATTENDANCE, s=h.session, t=h.after_entry)
    assert as_admin["data"]["auditAttendance"]["counts"] == after_entry["counts"]


def test_an_erased_member_reads_erased_and_their_check_ins_stay(history: History, cli) -> None:  # type: ignore[no-untyped-def]
    h, w = history, history.w
    w.call("ben", "DELETE", "/me", 204, json={"password": PASSWORD})
    ben, replay = json.loads(cli("audit", "checkins", "--user", w.ids["ben"], "--format", "json")[1])
    assert (ben["user_name"], ben["checkin_id"], ben["outcome"]) == ("[erased]", h.ids["ben_in"], "annulled")
    assert replay["user_name"] == "[erased]" and replay["reason"] == "TICKET_ALREADY_USED"
