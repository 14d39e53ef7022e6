"""The `users` read model: one row per registered user."""

from __future__ import annotations

from adapters.readmodels import ReadModelTx, Table
from domain.envelope import EventEnvelope

USERS = Table(
    "users",
    columns=(
        ("id", "text"),
        ("email", "text"),
        ("display_name", "text"),
        ("time_zone", "text"),
        ("registered_at", "text"),
        ("version", "int"),
    ),
    indexes=("email",),
)


class UsersProjection:
    name = "users"
    tables = (USERS,)
    event_types = frozenset({"UserRegistered", "UserDisplayNameChanged", "UserTimeZoneChanged", "UserDeleted"})

    def apply(self, event: EventEnvelope, tx: ReadModelTx) -> None:
        if event.event_type == "UserRegistered":
            d = event.data
            tx.upsert("users", {
                "id": event.aggregate_id,
                "email": d["email"],
                "display_name": d["display_name"],
                "time_zone": d["time_zone"],
                "registered_at": event.timestamp,
                "version": event.aggregate_version,
            })
        elif event.event_type == "UserDisplayNameChanged":
            tx.patch("users", event.aggregate_id,
                     {"display_name": event.data["display_name"], "version": event.aggregate_version})
        elif event.event_type == "UserTimeZoneChanged":
            tx.patch("users", event.aggregate_id, {"time_zone": event.data["time_zone"], "version": event.aggregate_version})
        elif event.event_type == "UserDeleted":
            tx.delete("users", event.aggregate_id)
