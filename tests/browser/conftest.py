"""The web console in a real browser: Debian's headless Chromium (installed by
`make install`), driven by Playwright with that system browser (Playwright's
own browser downloads are never used), against `attendwise serve` on the
embedded default with the face model in process.

Without Chromium or the console's built files these tests are skipped with
the fix, or fail when ATTENDWISE_REQUIRE_SERVICES=1 (the README's test command
and CI). Screenshots go to a temporary folder; with
ATTENDWISE_UPDATE_SCREENSHOTS=1 they replace docs/screenshots/ (shown in the
README)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.console import CONSOLE_DIR
from tests.conftest import REPO, REQUIRE
from tests.ml.conftest import model_home  # noqa: F401 - the provisioned weights, for the API's face model
from tests.processes import Proc, eventually, free_port, wait_http

CHROMIUM = Path(os.environ.get("ATTENDWISE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = REPO / "docs" / "screenshots"
UPDATE_SHOTS = os.environ.get("ATTENDWISE_UPDATE_SCREENSHOTS") == "1"
PASSWORD = "correct horse battery"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 860}


def _missing(msg: str) -> None:
    if REQUIRE:
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def built() -> Path:
    if not (CONSOLE_DIR / "index.html").is_file():
        _missing(f"the web console is not built ({CONSOLE_DIR}): run `make install` (with Node.js 20 and npm: "
                 "npm ci and vite build in web/)")
    return CONSOLE_DIR


@pytest.fixture(scope="session")
def chromium(built: Path) -> Path:
    if not os.access(CHROMIUM, os.X_OK):
        _missing(f"no Chromium at {CHROMIUM}: run `make install` (it installs Debian's chromium package) "
                 "or set ATTENDWISE_CHROMIUM")
    return CHROMIUM


@pytest.fixture(scope="module")
def playwright(chromium: Path) -> Iterator[Any]:
    """Module scope: while it runs, Playwright's event loop is the main
    thread's, and every later `asyncio.run` in the session would fail."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


def launch(playwright: Any, chromium: Path, camera: Path | None = None) -> Any:
    """Headless Chromium; with `camera`, a fake camera playing that Y4M file in a loop."""
    args = list(CHROMIUM_ARGS)
    if camera is not None:
        args += ["--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={camera}",
                 "--use-fake-ui-for-media-stream"]
    return playwright.chromium.launch(executable_path=str(chromium), args=args, headless=True)


class Site(str):
    """The API's base URL (a str), with its data folder."""

    data_dir: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, model_home: Path, built: Path) -> Iterator[Site]:  # noqa: F811
    """`attendwise serve` on the embedded default, as a newcomer starts it (the
    console's built files included), with the face model in process."""
    tmp = tmp_path_factory.mktemp("console")
    port = free_port()
    env = {"ATTENDWISE_DATA_DIR": str(tmp / "data"), "ATTENDWISE_MODEL_DIR": str(model_home),
           "ATTENDWISE_RATE_LIMITS": "false", "ATTENDWISE_LOG_FORMAT": "json"}
    api = Proc(["serve", "--port", str(port)], env, tmp / "api.log").start()
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=api)
        site = Site(f"http://127.0.0.1:{port}")
        site.data_dir = tmp / "data"
        yield site
    finally:
        api.stop()
    assert "Traceback" not in api.log, api.log[-3000:]
    assert "console_not_built" not in api.log


class Watch:
    """Console errors and uncaught exceptions of every page it watches."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def page(self, page: Any) -> Any:
        page.on("console", lambda m: m.type == "error" and self.errors.append(f"{page.url}: {m.text}"))
        page.on("pageerror", lambda e: self.errors.append(f"{page.url}: uncaught {e}"))
        return page


@pytest.fixture
def watch() -> Iterator[Watch]:
    w = Watch()
    yield w
    assert w.errors == [], w.errors


@pytest.fixture
def shoot(tmp_path: Path) -> Any:
    """shoot(page, "kiosk.png"): a screenshot, into docs/screenshots/ when updating them."""
    def take(page: Any, name: str, full_page: bool = False) -> Path:
        path = (SHOTS if UPDATE_SHOTS else tmp_path) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=full_page, animations="disabled", caret="hide")
        return path
    return take


# ---------------------------------------------------------------- the world the pages show
def person(base: str, email: str, name: str) -> tuple[str, dict[str, str]]:
    """A new user's id and Authorization header."""
    r = httpx.post(base + "/users", json={"email": email, "display_name": name, "password": PASSWORD}, timeout=10)
    assert r.status_code == 201, r.text
    token = httpx.post(base + "/auth/token", data={"grant_type": "password", "username": email, "password": PASSWORD},
                       timeout=10).json()["access_token"]
    return r.json()["id"], {"Authorization": f"Bearer {token}"}


def hosted_session(base: str, host: tuple[str, dict[str, str]], title: str, policy: str) -> str:
    """A session starting in 20 minutes (its check-in is open), hosted by `host`."""
    start = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=20)).replace(second=0, microsecond=0, tzinfo=None)
    r = httpx.post(base + "/series", headers=host[1], timeout=30, json={
        "title": title, "host_ids": [host[0]], "start": start.isoformat(), "time_zone": "UTC", "duration_minutes": 90})
    assert r.status_code == 201, r.text
    query = "query($id: ID!) { series(id: $id) { sessions { edges { node { id } } } } }"

    def first() -> str | None:
        found = httpx.post(base + "/graphql", json={"query": query, "variables": {"id": r.json()["series_id"]}}).json()
        edges = (found["data"]["series"] or {}).get("sessions", {}).get("edges")
        return edges[0]["node"]["id"] if edges else None

    session: str = eventually(first)
    assert httpx.put(f"{base}/sessions/{session}/checkin-policy", headers=host[1],
                     json={"policy": policy}).status_code == 204
    return session


def take_place(base: str, session: str, auth: dict[str, str]) -> None:
    assert httpx.post(f"{base}/sessions/{session}/places", headers=auth, json={}).status_code == 200


def sign_in(page: Any, email: str) -> None:
    """With the keyboard only: the email field has the focus, Tab to the password, Enter."""
    page.wait_for_selector("#email:focus")
    page.keyboard.type(email)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_selector("header nav >> text=Sign out")


def fits(page: Any) -> bool:
    """Nothing sticks out sideways (no horizontal scrolling)."""
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
