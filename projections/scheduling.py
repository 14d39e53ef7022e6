"""Read models of scheduling: series, sessions, and who hosts which session."""

from __future__ import annotations

import datetime as dt
import zoneinfo

from adapters.readmodels import ReadModelTx, Table
from domain.envelope import EventEnvelope

SERIES = Table("series", columns=(
    ("id", "text"), ("title", "text"), ("community_id", "text"), ("host_ids", "json"), ("rule", "text"),
    ("description", "text"), ("time_zone", "text"), ("start", "text"), ("duration_minutes", "int"),
    ("open_ended", "bool"), ("generated_until", "text"), ("ends_before", "text"), ("continued_by", "text"),
    ("visibility", "text"), ("location", "json"), ("capacity", "int"), ("version", "int"),
), indexes=("community_id",))

SESSIONS = Table("sessions", columns=(
    ("id", "text"), ("series_id", "text"), ("community_id", "text"), ("title", "text"), ("start", "text"),
    ("end_", "text"), ("time_zone", "text"), ("local_start", "text"), ("original_start", "text"),
    ("status", "text"), ("cancel_reason", "text"), ("capacity", "int"), ("location", "json"),
    ("host_ids", "json"), ("visibility", "text"), ("attendance", "int"), ("version", "int"),
    ("sort_key", "text"),  # start + id: a stable order for keyset pagination
), indexes=("series_id", "community_id", "sort_key"))

SESSION_HOSTS = Table("session_hosts", columns=(
    ("id", "text"), ("session_id", "text"), ("user_id", "text"), ("sort_key", "text"), ("status", "text"),
), indexes=("user_id", "session_id"))


def local_iso(start_utc: str, zone: str) -> str:
    return dt.datetime.fromisoformat(start_utc).astimezone(zoneinfo.ZoneInfo(zone)).replace(tzinfo=None).isoformat()


class SchedulingProjection:
    name = "scheduling"
    tables = (SERIES, SESSIONS, SESSION_HOSTS)
    event_types = frozenset({
        "SeriesCreated", "SeriesRuleChanged", "SeriesHorizonExtended", "SeriesSplit",
        "SessionScheduled", "SessionChanged", "SessionCancelled", "SessionAttendanceRecorded",
    })

    def reads(self, e: EventEnvelope) -> list[tuple[str, str]]:
        if e.event_type in ("SessionChanged", "SessionCancelled", "SessionAttendanceRecorded"):
            return [("sessions", e.aggregate_id)]
        return []

    def apply(self, e: EventEnvelope, tx: ReadModelTx) -> None:
        d, sid, v = e.data, e.aggregate_id, e.aggregate_version
        match e.event_type:
            case "SeriesCreated":
                tx.upsert("series", {
                    "id": sid, "title": d["title"], "community_id": d["community_id"], "host_ids": d["host_ids"],
                    "rule": d["rule"], "description": d["description"], "time_zone": d["time_zone"],
                    "start": d["start"], "duration_minutes": d["duration_minutes"],
                    "open_ended": d["generated_until"] is not None, "generated_until": d["generated_until"],
                    "visibility": d["visibility"], "location": d["location"], "capacity": d["capacity"],
                    "version": v})
            case "SeriesRuleChanged":
                tx.patch("series", sid, {"rule": d["rule"], "description": d["description"],
                                         "time_zone": d["time_zone"], "start": d["start"],
                                         "duration_minutes": d["duration_minutes"], "version": v})
            case "SeriesHorizonExtended":
                tx.patch("series", sid, {"generated_until": d["generated_until"], "open_ended": True, "version": v})
            case "SeriesSplit":
                tx.patch("series", sid, {"ends_before": d["at"], "continued_by": d["continued_by"], "version": v})
            case "SessionScheduled":
                key = f"{d['start']}|{sid}"
                tx.upsert("sessions", {
                    "id": sid, "series_id": d["series_id"], "community_id": d["community_id"], "title": d["title"],
                    "start": d["start"], "end_": d["end"], "time_zone": d["time_zone"],
                    "local_start": local_iso(d["start"], d["time_zone"]), "original_start": d["original_start"],
                    "status": "scheduled", "capacity": d["capacity"], "location": d["location"],
                    "host_ids": d["host_ids"], "visibility": d["visibility"], "attendance": 0, "version": v,
                    "sort_key": key})
                for host in d["host_ids"]:
                    tx.upsert("session_hosts", {"id": f"{sid}:{host}", "session_id": sid, "user_id": host,
                                                "sort_key": key, "status": "scheduled"})
            case "SessionChanged":
                row = tx.get("sessions", sid)
                assert row is not None, f"SessionChanged before SessionScheduled for {sid}"
                key = f"{d['start']}|{sid}"
                tx.patch("sessions", sid, {"start": d["start"], "end_": d["end"],
                                           "local_start": local_iso(d["start"], row["time_zone"]),
                                           "location": d["location"], "capacity": d["capacity"], "version": v,
                                           "sort_key": key})
                for host in row["host_ids"]:
                    tx.patch("session_hosts", f"{sid}:{host}", {"sort_key": key})
            case "SessionCancelled":
                row = tx.get("sessions", sid)
                assert row is not None, f"SessionCancelled before SessionScheduled for {sid}"
                tx.patch("sessions", sid, {"status": "cancelled", "cancel_reason": d["reason"], "version": v})
                for host in row["host_ids"]:
                    tx.patch("session_hosts", f"{sid}:{host}", {"status": "cancelled"})
            case "SessionAttendanceRecorded":
                row = tx.get("sessions", sid)
                assert row is not None
                tx.patch("sessions", sid, {"attendance": row["attendance"] + 1, "version": v})


