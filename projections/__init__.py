"""Read models built from the event log: each projection is a pure mapping
from events to row changes, run by a `Projector` with exactly-once effect."""
