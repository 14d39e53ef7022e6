"""Read models of attendance: places in sessions, check-in attempts with their
verdicts, who is present, and per session the counters the live dashboard
shows together with its change feed.

- `session_stats`: one row per session, counters kept incrementally (never
  counted at read time); `last_seq` is the log position of the session's last
  change, so a stats row is a consistent snapshot "as of `last_seq`".
- `session_changes`: one row per change a host's dashboard shows, keyed by
  session and the event's log position (`seq`). Rows and stats commit with
  the projection's position, so once the position reaches P every change up
  to P is readable: a dashboard reading "seq > last" never skips one.
- The arrival rate counts successful check-ins ("in") per second of the
  verdict's timestamp, keeping the last minute only (bounded, deterministic:
  a rebuild gives the same buckets).
"""

from __future__ import annotations

import datetime as dt
import weakref
from typing import Any

from adapters.readmodels import ReadModelTx, Table
from domain.envelope import EventEnvelope

PLACES = Table("places", columns=(
    ("id", "text"),  # session id:user id
    ("session_id", "text"), ("user_id", "text"), ("status", "text"),  # confirmed or waitlisted
    ("since", "text"), ("sort_key", "text"),  # since | user id: in the order places were taken
), indexes=("session_id", "sort_key"))

CHECKINS = Table("checkins", columns=(
    ("id", "text"), ("session_id", "text"), ("user_id", "text"), ("ticket_id", "text"), ("device_id", "text"),
    ("gate", "text"), ("direction", "text"), ("policy", "text"), ("scanned_at", "text"), ("received_at", "text"),
    ("offline", "bool"),
    ("outcome", "text"),  # pending, succeeded, failed, conflict, annulled
    ("reason", "text"),  # the verdict's stable code ("OK" when it succeeded)
    ("confidence", "float"), ("distance", "float"), ("threshold", "float"), ("model", "text"),
    ("model_version", "text"), ("decided_at", "text"), ("other_checkin_id", "text"),
    ("annulled_by", "text"), ("annul_reason", "text"),
    ("sort_key", "text"),  # received_at | id
), indexes=("session_id", "user_id", "outcome", "sort_key"))

PRESENCE = Table("presence", columns=(
    ("id", "text"),  # session id:user id
    ("session_id", "text"), ("user_id", "text"), ("attended", "bool"), ("inside", "bool"),
    ("gate", "text"),  # the gate of the last entry or exit
    ("marked_by", "text"), ("reason", "text"),  # the last host override
), indexes=("session_id",))

SESSION_STATS = Table("session_stats", columns=(
    ("id", "text"),  # the session's
    ("expected", "int"),  # confirmed places
    ("checked_in", "int"),  # members who attended
    ("pending", "int"), ("succeeded", "int"), ("failed", "int"), ("conflicts", "int"), ("annulled", "int"),
    ("inside", "int"), ("inside_by_gate", "json"),
    ("recent", "json"),  # {epoch second: successful check-ins ("in")}, the last minute of them
    ("last_seq", "int"),
))

SESSION_CHANGES = Table("session_changes", columns=(
    ("id", "text"),  # session id:position
    ("session_id", "text"), ("seq", "int"), ("change", "json"),
), indexes=("session_id", "seq"))

# attempts' outcome -> the session_stats column counting them
OUTCOME_COUNTERS = {"pending": "pending", "succeeded": "succeeded", "failed": "failed", "conflict": "conflicts",
                    "annulled": "annulled"}
VERDICTS = {"CheckInSucceeded": "succeeded", "CheckInFailed": "failed", "CheckInConflicted": "conflict",
            "CheckInAnnulled": "annulled"}
ROSTER = {"RosterPlaceTaken": "place_taken", "RosterWaitlisted": "waitlisted", "RosterPromoted": "promoted",
          "RosterPlaceGivenUp": "place_given_up"}
PRESENCE_KINDS = {"PresenceEntered": "entered", "PresenceExited": "exited",
                  "PresenceMarkedPresent": "marked_present", "PresenceMarkedAbsent": "marked_absent"}
RATE_WINDOW = 60  # seconds


def utc_key(iso: str) -> str:
    """An ISO 8601 instant in one fixed-width UTC form, so text order is time order."""
    if len(iso) == 32 and iso[19] == "." and iso.endswith("+00:00"):  # UTC with microseconds, as stamped: as is
        return iso[:26] + "Z"
    return dt.datetime.fromisoformat(iso).astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _second(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso).timestamp())


def rate_per_minute(stats: dict[str, Any], now: dt.datetime) -> int:
    """Successful check-ins ("in") in the 60 whole seconds up to `now`'s."""
    second = int(now.timestamp())
    return sum(n for s, n in (stats.get("recent") or {}).items() if second - RATE_WINDOW < int(s) <= second)


def dashboard_stats(stats: dict[str, Any] | None, now: dt.datetime) -> dict[str, Any]:
    """The counters a dashboard shows, from a `session_stats` row (or none yet)."""
    s = stats or new_stats("")
    return {"expected": s["expected"], "checked_in": s["checked_in"], "failed": s["failed"], "pending": s["pending"],
            "conflicts": s["conflicts"], "inside": s["inside"], "inside_by_gate": dict(s["inside_by_gate"] or {}),
            "rate_per_minute": rate_per_minute(s, now)}


def new_presence(session_id: str, user_id: str) -> dict[str, Any]:
    return {"id": f"{session_id}:{user_id}", "session_id": session_id, "user_id": user_id, "attended": False,
            "inside": False, "gate": None, "marked_by": None, "reason": None}


def new_stats(session_id: str) -> dict[str, Any]:
    return {"id": session_id, "expected": 0, "checked_in": 0, "pending": 0, "succeeded": 0, "failed": 0,
            "conflicts": 0, "annulled": 0, "inside": 0, "inside_by_gate": {}, "recent": {}, "last_seq": 0}


class _Cached:
    """The rows one transaction reads and writes, kept in memory: a batch of
    check-ins touches the same stats row, attempt and presence several times,
    and every read would cost a round trip (and flush the writes before it).
    Only this projection writes its tables, so the cache is exact. Rows are
    handed out as shallow copies: callers replace nested values, never edit them."""

    def __init__(self, tx: ReadModelTx) -> None:
        # a proxy: the projection keeps each cache in a WeakKeyDictionary keyed by its transaction, and a
        # value that held its key would keep both (and every row read) alive for good
        self.tx = weakref.proxy(tx)
        self.rows: dict[tuple[str, str], dict[str, Any] | None] = {}

    def get(self, table: str, key: str) -> dict[str, Any] | None:
        if (table, key) not in self.rows:
            self.rows[(table, key)] = self.tx.get(table, key)
        row = self.rows[(table, key)]
        return None if row is None else dict(row)

    def upsert(self, table: str, row: dict[str, Any]) -> None:
        self.rows[(table, row["id"])] = dict(row)
        self.tx.upsert(table, row)

    def patch(self, table: str, key: str, changes: dict[str, Any]) -> None:
        cached = self.rows.get((table, key))
        if cached is not None:
            cached.update(changes)
        self.tx.patch(table, key, changes)

    def delete(self, table: str, key: str) -> None:
        self.rows[(table, key)] = None
        self.tx.delete(table, key)


class AttendanceProjection:
    name = "attendance"
    tables = (PLACES, CHECKINS, PRESENCE, SESSION_STATS, SESSION_CHANGES)
    event_types = frozenset({"RosterOpened", "CheckInAttempted", "PresenceBegan",
                             *ROSTER, *VERDICTS, *PRESENCE_KINDS})

    def __init__(self) -> None:
        self._caches: weakref.WeakKeyDictionary[Any, _Cached] = weakref.WeakKeyDictionary()

    def apply(self, e: EventEnvelope, tx: ReadModelTx) -> None:
        if getattr(tx, "rows_in_memory", False):  # a rebuild's held copy: already a dictionary look-up
            self._apply(e, tx)  # type: ignore[arg-type]
            return
        cache = self._caches.get(tx)
        if cache is None:
            cache = self._caches[tx] = _Cached(tx)
        self._apply(e, cache)

    def reads(self, e: EventEnvelope) -> list[tuple[str, str]]:
        d, t = e.data, e.event_type
        if t in VERDICTS:  # and the session's stats, named by the attempt's row
            return [("checkins", e.aggregate_id)]
        if t == "PresenceBegan":
            return []
        sid = d.get("session_id") or ""
        if t in ROSTER:
            return [("places", f"{sid}:{d['user_id']}"), ("session_stats", sid)]
        if t in PRESENCE_KINDS:
            return [("presence", f"{sid}:{d['user_id']}"), ("session_stats", sid)]
        return [("session_stats", sid)]

    def _apply(self, e: EventEnvelope, tx: _Cached) -> None:
        t = e.event_type
        if t == "RosterOpened":
            if tx.get("session_stats", e.data["session_id"]) is None:
                tx.upsert("session_stats", new_stats(e.data["session_id"]))
        elif t == "PresenceBegan":  # a presence's first event: no row before it
            tx.upsert("presence", new_presence(e.data["session_id"], e.data["user_id"]))
        elif t in ROSTER:
            self._roster(e, tx)
        elif t == "CheckInAttempted":
            self._attempted(e, tx)
        elif t in VERDICTS:
            self._verdict(e, tx)
        else:
            self._presence(e, tx)

    # ------------------------------------------------------------ places
    def _roster(self, e: EventEnvelope, tx: _Cached) -> None:
        sid, uid = e.data["session_id"], e.data["user_id"]
        key = f"{sid}:{uid}"
        row = tx.get("places", key)
        was = bool(row and row["status"] == "confirmed")
        if e.event_type == "RosterPlaceGivenUp":
            tx.delete("places", key)
            now = False
        else:
            status = "waitlisted" if e.event_type == "RosterWaitlisted" else "confirmed"
            since = utc_key(e.timestamp)
            tx.upsert("places", {"id": key, "session_id": sid, "user_id": uid, "status": status, "since": since,
                                 "sort_key": f"{since}|{uid}"})
            now = status == "confirmed"
        stats = self._stats(tx, sid)
        stats["expected"] += int(now) - int(was)
        self._changed(tx, e, stats, kind=ROSTER[e.event_type], user_id=uid)

    # ------------------------------------------------------------ attempts
    def _attempted(self, e: EventEnvelope, tx: _Cached) -> None:
        d = e.data
        tx.upsert("checkins", {
            "id": e.aggregate_id, "session_id": d["session_id"], "user_id": d["user_id"], "ticket_id": d["ticket_id"],
            "device_id": d["device_id"], "gate": d["gate"], "direction": d["direction"], "policy": d["policy"],
            "scanned_at": d["scanned_at"], "received_at": d["received_at"], "offline": bool(d["offline"]),
            "outcome": "pending", "sort_key": f"{utc_key(d['received_at'])}|{e.aggregate_id}"})
        stats = self._stats(tx, d["session_id"])
        stats["pending"] += 1
        self._changed(tx, e, stats, kind="checkin.pending", user_id=d["user_id"], checkin_id=e.aggregate_id,
                      gate=d["gate"], direction=d["direction"])

    def _verdict(self, e: EventEnvelope, tx: _Cached) -> None:
        d, outcome = e.data, VERDICTS[e.event_type]
        row = tx.get("checkins", e.aggregate_id)
        assert row is not None, f"{e.event_type} before CheckInAttempted for {e.aggregate_id}"
        changes: dict[str, Any] = {"outcome": outcome}
        if e.event_type in ("CheckInSucceeded", "CheckInFailed"):
            changes |= {"reason": d["reason"], "confidence": d["confidence"], "distance": d["distance"],
                        "threshold": d["threshold"], "model": d["model"], "model_version": d["model_version"],
                        "decided_at": e.timestamp}
        if e.event_type == "CheckInConflicted":
            changes["other_checkin_id"] = d["other_checkin_id"]
        elif e.event_type == "CheckInAnnulled":
            changes |= {"annulled_by": d["by"], "annul_reason": d["reason"]}
        tx.patch("checkins", e.aggregate_id, changes)
        stats = self._stats(tx, row["session_id"])
        stats[OUTCOME_COUNTERS[row["outcome"]]] -= 1
        stats[OUTCOME_COUNTERS[outcome]] += 1
        if e.event_type == "CheckInSucceeded" and row["direction"] == "in":
            second = _second(e.timestamp)
            newest = max([second, *map(int, stats["recent"])])
            recent = {s: n for s, n in stats["recent"].items() if int(s) > newest - RATE_WINDOW}
            recent[str(second)] = recent.get(str(second), 0) + 1
            stats["recent"] = recent
        self._changed(tx, e, stats, kind=f"checkin.{outcome}", user_id=row["user_id"], checkin_id=e.aggregate_id,
                      gate=row["gate"], direction=row["direction"],
                      reason=d.get("reason"), by=d.get("by"))

    # ------------------------------------------------------------ presence
    def _presence(self, e: EventEnvelope, tx: _Cached) -> None:
        d, t = e.data, e.event_type
        sid, uid = d["session_id"], d["user_id"]
        before = tx.get("presence", f"{sid}:{uid}") or new_presence(sid, uid)
        after = dict(before)
        if t == "PresenceEntered":
            after |= {"attended": True, "inside": True, "gate": d["gate"]}
        elif t == "PresenceExited":
            after |= {"inside": False, "gate": d["gate"]}
        elif t == "PresenceMarkedPresent":
            after |= {"attended": True, "marked_by": d["by"], "reason": d["reason"]}
        else:
            after |= {"attended": False, "inside": False, "marked_by": d["by"], "reason": d["reason"]}
        tx.upsert("presence", after)
        stats = self._stats(tx, sid)
        stats["checked_in"] += int(after["attended"]) - int(before["attended"])
        gates = dict(stats["inside_by_gate"])
        if before["inside"]:
            gates[before["gate"]] -= 1
        if after["inside"]:
            gates[after["gate"]] = gates.get(after["gate"], 0) + 1
        stats["inside_by_gate"] = {g: n for g, n in gates.items() if n}
        stats["inside"] = sum(stats["inside_by_gate"].values())
        self._changed(tx, e, stats, kind=PRESENCE_KINDS[t], user_id=uid, checkin_id=d.get("checkin_id"),
                      gate=d.get("gate"), reason=d.get("reason"), by=d.get("by"))

    # ------------------------------------------------------------ shared
    def _stats(self, tx: _Cached, sid: str) -> dict[str, Any]:
        return tx.get("session_stats", sid) or new_stats(sid)

    def _changed(self, tx: _Cached, e: EventEnvelope, stats: dict[str, Any], *, kind: str, user_id: str,
                 checkin_id: str | None = None, gate: str | None = None, direction: str | None = None,
                 reason: str | None = None, by: str | None = None) -> None:
        """Write the session's stats and its change row (the stats after it).
        An attempt with an unreadable ticket names no session: its row is
        kept for the audit, and no dashboard shows it."""
        sid = stats["id"]
        if not sid:
            return
        stats["last_seq"] = e.position
        tx.upsert("session_stats", stats)
        tx.upsert("session_changes", {"id": f"{sid}:{e.position}", "session_id": sid, "seq": e.position, "change": {
            "kind": kind, "user_id": user_id, "checkin_id": checkin_id, "gate": gate, "direction": direction,
            "reason": reason, "by": by, "at": e.timestamp,
            "stats": dashboard_stats(stats, dt.datetime.fromisoformat(e.timestamp))}})
