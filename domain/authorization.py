"""Who may do what: rules as functions of the actor and the thing acted on.

Roles: every signed-in user is a `member`; a `host` is named on a series
(its `host_ids`); `platform_admin` and `auditor` (reads the check-in history
from the log, changes nothing) are granted by an operator
(`attendwise admin grant-role`). Community roles (member, host, admin) live in
`domain/communities.py`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from domain.errors import DomainError

PLATFORM_ADMIN = "platform_admin"
AUDITOR = "auditor"
SYSTEM = "system"
GRANTABLE = frozenset({PLATFORM_ADMIN, AUDITOR})


class NotSignedIn(DomainError):
    code = "TOKEN_INVALID"
    status = 401


class Forbidden(DomainError):
    code = "FORBIDDEN"
    status = 403


def privileged(roles: Iterable[str]) -> bool:
    return bool({PLATFORM_ADMIN, SYSTEM} & set(roles))


def check_signed_in(user_id: uuid.UUID | None, roles: Iterable[str]) -> None:
    if user_id is None and not privileged(roles):
        raise NotSignedIn("sign in to do this")


def check_is_host(user_id: uuid.UUID | None, roles: Iterable[str], host_ids: Iterable[str]) -> None:
    """Only a series' hosts (or a platform admin, or the platform itself) may change it."""
    check_signed_in(user_id, roles)
    if not privileged(roles) and str(user_id) not in set(host_ids):
        raise Forbidden("only the hosts of this series may do this")


def check_sees_user(user_id: uuid.UUID | None, roles: Iterable[str], subject: str) -> None:
    """A member sees their own private data; an admin sees anyone's."""
    check_signed_in(user_id, roles)
    if not privileged(roles) and str(user_id) != subject:
        raise Forbidden("this belongs to another user")
