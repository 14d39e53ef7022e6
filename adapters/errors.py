"""Errors adapters raise instead of driver exceptions."""

from __future__ import annotations


class ServiceUnavailable(Exception):
    """A service the configuration points at cannot be reached.

    The message names the service and the setting that points at it, so an
    operator knows what to start or fix."""

    def __init__(self, service: str, setting: str, target: str, reason: object) -> None:
        self.service = service
        self.setting = setting
        self.target = target
        super().__init__(
            f"{service} is unavailable at {target} (setting {setting}): {reason}"
        )
