"""Errors adapters raise instead of driver exceptions."""

from __future__ import annotations

import re

_CREDENTIALS = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^\s:/@]*):[^\s/@]*@")


def without_credentials(text: str) -> str:
    """`scheme://user:password@host` becomes `scheme://user:***@host`, anywhere in `text`."""
    return _CREDENTIALS.sub(r"\g<scheme>\g<user>:***@", text)


class ServiceUnavailable(Exception):
    """A service the configuration points at cannot be reached (callers are
    told to retry after `RETRY_AFTER` seconds: HTTP 503 with Retry-After).

    The message names the service and the setting that points at it, so an
    operator knows what to start or fix; never a password the setting's URL
    holds (messages reach logs, the CLI's output and /readyz)."""

    RETRY_AFTER = 5  # seconds

    def __init__(self, service: str, setting: str, target: str, reason: object) -> None:
        self.service = service
        self.setting = setting
        self.target = without_credentials(target)
        self.reason = without_credentials(str(reason))
        super().__init__(without_credentials(
            f"{service} is unavailable at {target} (setting {setting}): {reason}"
        ))

    def __reduce__(self) -> tuple[object, ...]:  # whole across processes (a rebuild worker's failure)
        return type(self), (self.service, self.setting, self.target, self.reason), self.__dict__
