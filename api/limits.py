"""Which requests are limited, and how much (token buckets per client IP, per
credential, and per login name)."""

from __future__ import annotations

import hashlib

from adapters.ratelimit import Limit

EVERY_REQUEST_PER_IP = Limit(rate=50, burst=100)
EVERY_REQUEST_PER_TOKEN = Limit(rate=20, burst=40)
LOGIN_PER_IP = Limit.per_minute(20)
LOGIN_PER_USERNAME = Limit.per_minute(5)  # brute force against one account
REGISTER_PER_IP = Limit.per_minute(10)
RESET_PER_ADDRESS = Limit.per_minute(3)  # nobody's inbox is flooded with reset links
CHECKIN_PER_SCANNER = Limit(rate=5, burst=30)  # one scanner admits about one person a second; bursts at the door


def buckets(method: str, path: str, ip: str, authorization: str | None) -> list[tuple[str, Limit]]:
    """The buckets one request spends from (the login name is added by the
    token endpoint, which reads the form)."""
    out = [(f"ip:{ip}", EVERY_REQUEST_PER_IP)]
    if authorization:
        out.append((f"cred:{hashlib.sha256(authorization.encode()).hexdigest()[:32]}", EVERY_REQUEST_PER_TOKEN))
    if method == "POST" and path == "/auth/token":
        out.append((f"login-ip:{ip}", LOGIN_PER_IP))
    if method == "POST" and path == "/checkin" and authorization:
        out.append((f"checkin:{hashlib.sha256(authorization.encode()).hexdigest()[:32]}", CHECKIN_PER_SCANNER))
    if method == "POST" and path == "/users":
        out.append((f"register-ip:{ip}", REGISTER_PER_IP))
    return out


def login_bucket(username: str) -> tuple[str, Limit]:
    return f"login-user:{hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]}", LOGIN_PER_USERNAME


def reset_bucket(email: str) -> tuple[str, Limit]:
    return f"reset:{hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]}", RESET_PER_ADDRESS
