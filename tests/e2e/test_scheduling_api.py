"""Scheduling over HTTP and GraphQL, on the embedded default and the full stack."""

from __future__ import annotations

import datetime as dt
import uuid

import httpx
from icalendar import Calendar

from tests.e2e.conftest import Stack, command_events, gql
from tests.processes import eventually

PASSWORD = "correct horse battery"
YEAR = 2037  # in the future (the API runs on the real clock); its calendar is 2026's: 6 January is a Tuesday

SERIES_QUERY = """query($id: ID!, $after: String) { series(id: $id) { title description rule openEnded hostIds
  sessions(first: 3, after: $after) { edges { cursor node { id start localStart status capacity location { name lat } } }
  pageInfo { hasNextPage endCursor } } } }"""


def sign_up(base: str, email: str) -> tuple[str, dict[str, str]]:
    """A new user's id and the Authorization header of their session."""
    uid = httpx.post(base + "/users", json={"email": email, "display_name": email.split("@")[0],
                                            "password": PASSWORD}, timeout=10).json()["id"]
    token = httpx.post(base + "/auth/token", data={"grant_type": "password", "username": email,
                                                   "password": PASSWORD}, timeout=10).json()["access_token"]
    return uid, {"Authorization": f"Bearer {token}"}


def create(base: str, host: tuple[str, dict[str, str]], **overrides: object) -> httpx.Response:
    body = {"title": "Tuesday run", "host_ids": [host[0]], "start": f"{YEAR}-01-06T18:00:00",
            "time_zone": "Europe/Berlin", "duration_minutes": 90, "rule": "FREQ=WEEKLY;BYDAY=TU;COUNT=8",
            "location": {"name": "Park gate", "address": "Main St 1", "lat": 52.52, "lon": 13.40}, "capacity": 20}
    body.update(overrides)
    return httpx.post(base + "/series", json=body, headers=host[1], timeout=30)


def all_sessions(base: str, series_id: str) -> list[dict]:
    nodes, after = [], None
    while True:
        series = gql(base, SERIES_QUERY, id=series_id, after=after)["data"]["series"]
        if series is None:  # not projected yet
            return []
        page = series["sessions"]
        nodes += [e["node"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            return nodes
        after = page["pageInfo"]["endCursor"]


def test_schedule_read_edit_and_export_a_series(base_url: Stack) -> None:
    host = sign_up(base_url, "host@example.org")
    HOST, auth = host
    COMMUNITY = httpx.post(base_url + "/communities", json={"name": "Runners"}, headers=auth, timeout=30).json()["id"]
    r = create(base_url, host, community_id=COMMUNITY)
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["description"] == "Every Tuesday at 18:00, 8 times" and out["added"] == 8
    sid = out["series_id"]

    series = eventually(lambda: gql(base_url, SERIES_QUERY, id=sid)["data"]["series"])
    assert series["rule"] == "FREQ=WEEKLY;BYDAY=TU;COUNT=8" and series["hostIds"] == [HOST]
    sessions = eventually(lambda: len(all_sessions(base_url, sid)) == 8 and all_sessions(base_url, sid))
    assert [s["localStart"][11:16] for s in sessions] == ["18:00"] * 8  # wall time kept across DST
    assert sessions[0]["start"] == f"{YEAR}-01-06T17:00:00+00:00" and sessions[0]["location"]["name"] == "Park gate"

    # one occurrence: move it, then cancel another
    second, third = sessions[1]["id"], sessions[2]["id"]
    move = {"start": f"{YEAR}-01-14T19:00:00", "capacity": 5}
    assert httpx.patch(f"{base_url}/sessions/{second}", json=move, headers=auth).status_code == 204
    assert httpx.post(f"{base_url}/sessions/{third}/cancel", json={"reason": "Pitch closed"}, headers=auth).status_code == 204
    again = httpx.post(f"{base_url}/sessions/{third}/cancel", json={}, headers=auth)
    assert again.status_code == 409 and again.json()["code"] == "SESSION_CANCELLED"

    def edited() -> list[dict] | None:
        s = all_sessions(base_url, sid)
        return s if s[1]["capacity"] == 5 and s[2]["status"] == "cancelled" else None

    s = eventually(edited)
    assert s[1]["localStart"] == f"{YEAR}-01-14T19:00:00"

    # this and all following, from the fifth session
    split = httpx.post(f"{base_url}/sessions/{sessions[4]['id']}/this-and-following", json={"start_time": "19:30"},
                       headers=auth)
    assert split.status_code == 201, split.text
    body = split.json()
    assert body["description"] == "Every Tuesday at 19:30, 4 times" and len(body["cancelled"]) == 4
    new_id = body["new_series_id"]
    assert eventually(lambda: len(all_sessions(base_url, new_id)) == 4)

    # a community's sessions in a date range, paginated; a host's upcoming sessions
    window = gql(base_url, """query($c: ID!, $f: String!, $t: String!) { communitySessions(communityId: $c, from: $f,
        to: $t, first: 2) { edges { node { id localStart } } pageInfo { hasNextPage } } }""",
                 c=COMMUNITY, f=f"{YEAR}-01-01T00:00:00Z", t=f"{YEAR}-01-21T00:00:00Z")["data"]["communitySessions"]
    assert [e["node"]["localStart"][:10] for e in window["edges"]] == [f"{YEAR}-01-06", f"{YEAR}-01-14"]
    assert window["pageInfo"]["hasNextPage"] is True
    def hosted(**since: str) -> dict:
        return httpx.post(base_url + "/graphql", headers=auth, json={
            "query": "query($u: ID!, $f: String) { upcomingSessions(userId: $u, first: 50, from: $f) "
                     "{ edges { node { id start } } } }", "variables": {"u": HOST, **since}}).json()
    upcoming = hosted()["data"]["upcomingSessions"]["edges"]
    assert len(upcoming) == 8 - 1 - 4 + 4  # cancelled ones are not upcoming
    # from an instant (a console passes the start of the day): the ones starting then or later
    later = hosted(f=upcoming[1]["node"]["start"])["data"]["upcomingSessions"]["edges"]
    assert [e["node"]["id"] for e in later] == [e["node"]["id"] for e in upcoming[1:]]
    assert hosted(f="next tuesday")["errors"][0]["extensions"]["code"] == "INVALID_INPUT"

    # iCalendar: calendar apps read it back
    ics = httpx.get(f"{base_url}/communities/{COMMUNITY}/calendar.ics")
    assert ics.status_code == 200 and ics.headers["content-type"].startswith("text/calendar")
    events = [c for c in Calendar.from_ical(ics.content).walk("VEVENT")]
    assert len(events) == 12  # 8 + 4 new, cancelled ones marked as such
    by_uid = {str(e["uid"]): e for e in events}
    first = by_uid[f"{sessions[0]['id']}@attendwise"]
    assert first.decoded("dtstart") == dt.datetime(YEAR, 1, 6, 17, tzinfo=dt.timezone.utc)
    assert str(first["location"]) == "Park gate, Main St 1" and first["summary"] == "Tuesday run"
    assert str(by_uid[f"{third}@attendwise"]["status"]) == "CANCELLED"
    mine = Calendar.from_ical(httpx.get(f"{base_url}/users/{HOST}/calendar.ics").content)
    assert len(list(mine.walk("VEVENT"))) == 12


def test_bad_schedules_are_4xx_problems_and_append_nothing(base_url: Stack) -> None:
    from adapters.eventstore import ApplicationEventLog, open_event_store

    host = sign_up(base_url, "bad@example.org")
    app = open_event_store(base_url.env.get("ATTENDWISE_DATABASE_URL"), base_url.data_dir / "events.sqlite3")
    log = ApplicationEventLog(app)
    before = command_events(log)
    cases = [
        (dict(rule="FREQ=WEEKLY;BYDAY=XX"), "rule"),
        (dict(rule="FREQ=WEEKLY;UNTIL=20000101T000000Z"), "rule"),
        (dict(time_zone="Atlantis/Capital"), "time_zone"),
        (dict(rule="FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"), "rule"),
        (dict(rule="FREQ=DAILY;COUNT=20000"), "rule"),
        (dict(rule="FREQ=MINUTELY"), "rule"),
        (dict(start=f"{YEAR}-01-06T18:00:00+01:00"), "start"),
        (dict(capacity=0), "capacity"),
        (dict(host_ids=[]), "host_ids"),
    ]
    for overrides, field in cases:
        r = create(base_url, host, **overrides)
        assert 400 <= r.status_code < 500, (overrides, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        problem = r.json()
        assert problem["code"] == "INVALID_INPUT" and field in str(problem["errors"]), (overrides, problem)
    missing = httpx.post(f"{base_url}/sessions/{uuid.uuid4()}/cancel", json={}, headers=host[1])
    assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"
    assert command_events(log) == before
    app.close()


def test_only_hosts_change_a_series_and_sign_in_is_required(base_url: Stack) -> None:
    host, stranger = sign_up(base_url, "owner@example.org"), sign_up(base_url, "stranger@example.org")
    out = create(base_url, host).json()
    anonymous = httpx.post(base_url + "/series", json={"title": "x", "host_ids": [host[0]], "start": f"{YEAR}-01-06T18:00:00",
                                                        "time_zone": "UTC", "duration_minutes": 30})
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "TOKEN_INVALID"
    for_someone_else = create(base_url, stranger, host_ids=[host[0]])
    assert for_someone_else.status_code == 403 and for_someone_else.json()["code"] == "FORBIDDEN"
    session = eventually(lambda: all_sessions(base_url, out["series_id"]))[0]["id"]
    denied = httpx.post(f"{base_url}/sessions/{session}/cancel", json={}, headers=stranger[1])
    assert denied.status_code == 403 and denied.json()["code"] == "FORBIDDEN"
    rule = {"start": f"{YEAR}-01-06T18:00:00", "time_zone": "Europe/Berlin", "duration_minutes": 60,
            "rule": "FREQ=WEEKLY;BYDAY=WE;COUNT=2"}
    assert httpx.put(f"{base_url}/series/{out['series_id']}/rule", json=rule, headers=stranger[1]).status_code == 403
    assert httpx.post(f"{base_url}/sessions/{session}/cancel", json={}, headers=host[1]).status_code == 204
