"""The write side: commands (imperative, small dataclasses) and the handlers
that turn them into events in the event store."""
