"""Structured logs: JSON lines on stderr (or a readable console format), ours
and the libraries' (warnings and errors of the standard `logging` loggers go
through the same processors; their info lines, such as an HTTP client's
request URLs, stay out).

No secret is logged on purpose; `redact` is the net for what a message or an
exception might carry anyway: a URL's password (`scheme://user:***@host`),
JSON Web Tokens (access, refresh, ticket, reset and verification tokens:
`[jwt]`), PEM private keys, and any field named like a secret."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

from adapters.errors import without_credentials

JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S)
SECRET_FIELDS = {"password", "current_password", "new_password", "token", "access_token", "refresh_token",
                 "authorization", "secret", "nonce", "embedding", "template"}


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return PRIVATE_KEY.sub("[private key]", JWT.sub("[jwt]", without_credentials(value)))
    if isinstance(value, dict):
        return {k: "[redacted]" if str(k).lower() in SECRET_FIELDS else _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def redact(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """A structlog processor: masks secrets in every value (after exceptions are rendered)."""
    return _clean(event)  # type: ignore[no-any-return]


def configure(level: str = "info", fmt: str = "json") -> None:
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name("attendwise")
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, structlog.processors.add_log_level,
                           structlog.processors.TimeStamper(fmt="iso", utc=True)],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, redact, renderer]))
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if h.get_name() != "attendwise"] + [handler]
    root.setLevel(max(logging.WARNING, getattr(logging, level.upper())))
