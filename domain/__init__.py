"""AttendWise's domain: aggregates, their events and the rules they obey.

Pure Python: nothing here performs I/O. Aggregates are `eventsourcing`
aggregates; every state change is a past-tense event.
"""
