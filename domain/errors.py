"""Domain errors: one type per refusal, each with a stable `code`.

Callers (HTTP, GraphQL, CLI) map codes to responses; tests assert codes, never
the human message.
"""

from __future__ import annotations


class DomainError(Exception):
    """A command was refused by a business rule."""

    code = "DOMAIN_RULE"
    status = 400  # the HTTP status an API should use

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInput(DomainError):
    code = "INVALID_INPUT"
    status = 422


class NotFound(DomainError):
    code = "NOT_FOUND"
    status = 404


class EmailAlreadyRegistered(DomainError):
    code = "EMAIL_TAKEN"
    status = 409


class ConcurrencyConflict(DomainError):
    """Two commands changed one aggregate from the same version; this one lost."""

    code = "CONCURRENCY_CONFLICT"
    status = 409


class Refused(DomainError):
    """A refusal whose code is chosen where it happens (one class for a
    family of codes, e.g. every way a check-in can be refused)."""

    status = 409

    def __init__(self, code: str, message: str, status: int | None = None, **details: object) -> None:
        super().__init__(message, **details)
        self.code = code
        if status is not None:
            self.status = status
