"""The web console end to end in headless Chromium, against `attendwise serve`.

A member signs in and enrols her face on the enrolment page (one retry, then
each liveness challenge). A host signs in, finds the session in "My sessions"
and opens its live dashboard; on a second page the kiosk's camera (a fake one
playing a video: the member's real ticket as a QR code, then her face) reads
the ticket, takes the photo, gets the verdict from POST /checkin and shows it
in large text, ready again within 2 seconds; the dashboard shows the check-in
arrive live. Then a host override, from the keyboard. A second test cuts the
dashboard's WebSocket while check-ins happen: it reconnects, resumes after
the last sequence number and shows each check-in exactly once.

The face photos come from ../shared/faces (see tests/ml/conftest.py): without
them the face test is skipped, or fails under ATTENDWISE_REQUIRE_SERVICES=1."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.sync_api import expect

from api.console import mount_console
from tests.browser.camera import framed, write_y4m
from tests.browser.conftest import (DESKTOP, PHONE, REPO, Site, Watch, fits, hosted_session, launch, person, sign_in,
                                    take_place)
from tests.ml.conftest import need_faces
from tests.ml.test_enrolment_and_checkin import frame_for

READY_WITHIN_MS = 2000


def counter(page: Any, name: str) -> str:
    return page.text_content(f'[data-counter="{name}"]') or ""


def until_counter(page: Any, name: str, value: int, timeout: float = 15_000) -> None:
    expect(page.locator(f'[data-counter="{name}"]')).to_have_text(str(value), timeout=timeout)


def enrol_on_the_page(page: Any, faces: Path, shoot: Any) -> None:
    """The enrolment page: a photo with two people is refused (retry), then one frame per challenge."""
    page.click("text=Start")
    page.wait_for_selector("#instruction[data-challenge]")
    challenges = page.eval_on_selector_all("#steps li", "items => items.map(i => i.dataset.challenge)")
    assert challenges[0] == "front" and len(challenges) >= 3

    def send(photo: bytes) -> str:
        page.set_input_files("#photo", files=[{"name": "frame.jpg", "mimeType": "image/jpeg", "buffer": photo}])
        page.wait_for_selector("#result[data-status]", timeout=120_000)
        return page.get_attribute("#result", "data-status") or ""

    assert send((faces / "couple.jpg").read_bytes()) == "CHALLENGE_FAILED_RETRY"
    assert page.get_attribute("#result", "data-reason") == "several_faces"
    shoot(page, "enrol.png")
    page.click("#result >> text=Retry")
    for i, challenge in enumerate(challenges):
        assert page.get_attribute("#instruction", "data-challenge") == challenge
        assert page.get_attribute(f'#steps li[data-challenge="{challenge}"]', "aria-current") == "step"
        status = send(frame_for(faces, challenge))
        if i < len(challenges) - 1:
            assert status == "CHALLENGE_PASSED_CONTINUE", (challenge, page.text_content("#result"))
            page.click("#result >> text=Continue")
        else:
            assert status == "ENROLLED", (challenge, page.text_content("#result"))
    assert "Your face is enrolled" in (page.text_content("#result") or "")
    assert page.eval_on_selector_all("#steps li.done", "items => items.length") == len(challenges)


def test_the_kiosk_checks_a_member_in_by_qr_and_face_and_the_dashboard_shows_it_live(
        site: Site, playwright: Any, chromium: Path, watch: Watch, shoot: Any, tmp_path: Path) -> None:
    faces = need_faces()
    host = person(site, "grace@example.org", "Grace Hopper")
    ada = person(site, "ada@example.org", "Ada Lovelace")
    others = [person(site, "alan@example.org", "Alan Turing"), person(site, "katherine@example.org", "Katherine Johnson")]
    session = hosted_session(site, host, "Thursday lab", policy="face")
    for _, auth in (ada, *others):
        take_place(site, session, auth)
    ticket = httpx.get(f"{site}/sessions/{session}/ticket?format=png", headers=ada[1], timeout=10)
    assert ticket.status_code == 200 and ticket.headers["content-type"] == "image/png"
    camera = write_y4m(tmp_path / "door.y4m", [(framed(ticket.content, scale=0.95), 2.5),
                                               (framed((faces / "img16.jpg").read_bytes()), 5.0)])

    browser = launch(playwright, chromium, camera)
    try:
        # the member, on her phone: sign in, enrol her face
        member = browser.new_context(viewport=PHONE, permissions=["camera"])
        phone = watch.page(member.new_page())
        phone.goto(site + "/#/enrol")
        assert fits(phone)
        sign_in(phone, "ada@example.org")
        phone.wait_for_selector("h1:text('Enrol my face')")
        assert fits(phone)
        enrol_on_the_page(phone, faces, shoot)
        assert fits(phone)
        member.close()

        # the host: sign in, my sessions, the live dashboard
        desk = browser.new_context(viewport=DESKTOP, permissions=["camera"])
        dashboard = watch.page(desk.new_page())
        dashboard.goto(site + "/")
        shoot(dashboard, "signin.png")
        sign_in(dashboard, "grace@example.org")
        dashboard.wait_for_selector(f'#upcoming li[data-session="{session}"]')
        shoot(dashboard, "sessions.png")
        dashboard.click("a[aria-label='Dashboard: Thursday lab']")
        dashboard.wait_for_selector(".link-state[data-state='live']")
        until_counter(dashboard, "expected", 3)
        assert [counter(dashboard, c) for c in ("checked_in", "failed", "pending")] == ["0", "0", "0"]

        # the kiosk at the door (a phone-sized screen): QR code, then face, then the verdict
        kiosk = watch.page(desk.new_page())
        kiosk.set_viewport_size(PHONE)
        kiosk.goto(f"{site}/#/kiosk/{session}")
        kiosk.wait_for_selector("h1:text('Kiosk: Thursday lab')")
        kiosk.wait_for_selector("#kiosk[data-phase='face']", timeout=30_000)  # the QR code was read
        shoot(kiosk, "kiosk-camera.png")
        kiosk.wait_for_selector("#verdict[data-outcome]", timeout=60_000)
        assert kiosk.get_attribute("#verdict", "data-outcome") == "succeeded", kiosk.text_content("#verdict")
        expect(kiosk.locator("#verdict .headline")).to_contain_text("Ada Lovelace")
        assert "Checked in" in (kiosk.text_content("#verdict .detail") or "")
        assert fits(kiosk)
        shoot(kiosk, "kiosk.png")
        kiosk.wait_for_selector("#kiosk[data-phase='scanning']", timeout=5_000)
        shown, ready = (int(kiosk.get_attribute("#kiosk", a) or 0) for a in ("data-verdict-at", "data-ready-at"))
        assert 0 < ready - shown <= READY_WITHIN_MS
        assert kiosk.get_attribute("#recent-verdicts li:first-child", "data-outcome") == "succeeded"

        # the dashboard, live: the check-in arrived, counted and charted
        arrived = "#feed li[data-kind='checkin.succeeded'][data-user='%s']" % ada[0]
        dashboard.wait_for_selector(arrived, timeout=10_000)
        expect(dashboard.locator(f"{arrived} .name")).to_have_text("Ada Lovelace")
        until_counter(dashboard, "checked_in", 1)
        assert counter(dashboard, "failed") == "0" and counter(dashboard, "pending") == "0"
        assert dashboard.eval_on_selector_all("#chart rect.bar", "bars => bars.map(b => b.dataset.count)") == ["1"]
        dashboard.wait_for_selector(f"#attendees li[data-user='{ada[0]}'] .standing:text-is('here')")

        # a host override, from the keyboard: Alan was seen at the door without his ticket
        alan = others[0][0]
        dashboard.focus("button[aria-label='Mark present: Alan Turing']")
        dashboard.keyboard.press("Enter")
        dashboard.wait_for_selector(f"#reason-{alan}:focus")
        dashboard.keyboard.type("forgot his ticket, seen at the door")
        dashboard.keyboard.press("Enter")
        dashboard.wait_for_selector(f"#feed li[data-kind='marked_present'][data-user='{alan}']")
        until_counter(dashboard, "checked_in", 2)
        assert "forgot his ticket" in (dashboard.text_content(f"#feed li[data-kind='marked_present']") or "")
        dashboard.wait_for_selector(f"#attendees li[data-user='{alan}'] .standing:text-is('attended')")
        shoot(dashboard, "dashboard.png", full_page=True)

        # every control can be reached with Tab
        dashboard.focus("h1")
        reached = set()
        for _ in range(40):
            dashboard.keyboard.press("Tab")
            reached.add(dashboard.evaluate("(document.activeElement.getAttribute('aria-label') || "
                                           "document.activeElement.textContent).trim()"))
        assert {"Open the kiosk", "Mark absent: Ada Lovelace", "Mark present: Katherine Johnson"} <= reached, reached
        dashboard.set_viewport_size(PHONE)
        assert fits(dashboard)
        desk.close()
    finally:
        browser.close()


def test_the_kiosk_shows_a_refusal_in_large_text_with_its_reason(
        site: Site, playwright: Any, chromium: Path, watch: Watch, tmp_path: Path) -> None:
    """A ticket already used, typed in at the kiosk: "Not checked in" in large
    text with the reason in words and its code, then ready for the next person."""
    from PIL import Image

    host = person(site, "hedy@example.org", "Hedy Lamarr")
    emmy = person(site, "emmy@example.org", "Emmy Noether")
    session = hosted_session(site, host, "Evening talk", policy="qr")
    take_place(site, session, emmy[1])
    token = httpx.get(f"{site}/sessions/{session}/ticket", headers=emmy[1], timeout=10).json()["token"]
    first = httpx.post(site + "/checkin", headers=host[1], timeout=30,
                       data={"token": token, "device_id": "side-door", "session_id": session})
    assert first.status_code == 200 and first.json()["outcome"] == "succeeded", first.text
    camera = write_y4m(tmp_path / "empty.y4m", [(framed(Image.new("RGB", (64, 48), "white")), 1.0)])  # no QR code

    browser = launch(playwright, chromium, camera)
    try:
        kiosk = watch.page(browser.new_context(viewport=PHONE, permissions=["camera"]).new_page())
        kiosk.goto(site + "/")
        sign_in(kiosk, "hedy@example.org")
        kiosk.goto(f"{site}/#/kiosk/{session}")
        kiosk.wait_for_selector("#kiosk[data-phase='scanning']", timeout=30_000)
        kiosk.click("text=Kiosk settings")
        kiosk.uncheck("#face")  # this door takes no photos
        kiosk.fill("#ticket-code", token)
        kiosk.press("#ticket-code", "Enter")
        kiosk.wait_for_selector("#verdict[data-outcome='failed']", timeout=30_000)
        assert kiosk.get_attribute("#verdict", "data-reason") == "TICKET_ALREADY_USED"
        expect(kiosk.locator("#verdict .headline")).to_have_text("Not checked in")
        expect(kiosk.locator("#verdict .detail")).to_have_text("this ticket was already used (TICKET_ALREADY_USED)")
        size = kiosk.eval_on_selector("#verdict .headline", "e => parseFloat(getComputedStyle(e).fontSize)")
        assert size >= 32, size  # large text, on a phone-sized screen too
        assert fits(kiosk)
        kiosk.wait_for_selector("#kiosk[data-phase='scanning']", timeout=5_000)
        shown, ready = (int(kiosk.get_attribute("#kiosk", a) or 0) for a in ("data-verdict-at", "data-ready-at"))
        assert 0 < ready - shown <= READY_WITHIN_MS
        assert kiosk.get_attribute("#recent-verdicts li:first-child", "data-reason") == "TICKET_ALREADY_USED"
    finally:
        browser.close()
    # Chromium reports the refusal's 409 on the console as a failed resource load: that one line is expected
    expected = [e for e in watch.errors if "status of 409" in e]
    assert len(expected) == 1, watch.errors
    watch.errors[:] = [e for e in watch.errors if e not in expected]


def test_the_dashboard_reconnects_and_resumes_without_gaps_or_duplicates(
        site: Site, playwright: Any, chromium: Path, watch: Watch, tmp_path: Path) -> None:
    host = person(site, "host2@example.org", "Mary Jackson")
    members = [person(site, f"m{i}@example.org", f"Member {i}") for i in range(6)]
    session = hosted_session(site, host, "Gala", policy="qr")
    tickets = []
    for _, auth in members:
        take_place(site, session, auth)
        tickets.append(httpx.get(f"{site}/sessions/{session}/ticket", headers=auth, timeout=10).json()["token"])

    def scan(i: int) -> None:
        r = httpx.post(site + "/checkin", headers=host[1], timeout=30,
                       data={"token": tickets[i], "device_id": "door", "session_id": session})
        assert r.status_code == 200 and r.json()["outcome"] == "succeeded", r.text

    scan(0)  # before the dashboard opens: it comes from the history
    links: list[Any] = []
    urls: list[str] = []
    cut = {"on": False}

    def route(ws: Any) -> None:
        urls.append(ws.url)
        if cut["on"]:
            ws.close(code=1011, reason="the test cut the line")
        else:
            ws.connect_to_server()
            links.append(ws)

    browser = launch(playwright, chromium)
    try:
        page = watch.page(browser.new_page(viewport=DESKTOP))
        page.route_web_socket(re.compile(r"/sessions/[^/]+/live"), route)
        page.goto(f"{site}/#/sessions/{session}")
        sign_in(page, "host2@example.org")
        page.wait_for_selector(".link-state[data-state='live']")
        until_counter(page, "expected", 6)
        until_counter(page, "checked_in", 1)
        page.wait_for_selector(f"#feed li[data-kind='checkin.succeeded'][data-user='{members[0][0]}']")
        scan(1)
        until_counter(page, "checked_in", 2)
        assert "after=" not in urls[0]

        cut["on"] = True  # the line drops; three people check in meanwhile
        links[-1].close(code=1011, reason="the test cut the line")
        page.wait_for_selector(".link-state[data-state='waiting']")
        for i in (2, 3, 4):
            scan(i)
        time.sleep(1.5)  # at least one reconnect attempt fails meanwhile
        assert counter(page, "checked_in") == "2"
        cut["on"] = False
        page.wait_for_selector(".link-state:text('Live (resumed)')", timeout=20_000)
        until_counter(page, "checked_in", 5)
        scan(5)
        until_counter(page, "checked_in", 6)

        resumed = [u for u in urls if "after=" in u]
        assert resumed and len(urls) >= 3, urls
        succeeded = page.eval_on_selector_all("#feed li[data-kind='checkin.succeeded']", "rows => rows.map(r => r.dataset.user)")
        assert sorted(succeeded) == sorted(uid for uid, _ in members)  # each once: no gap, no duplicate
        assert page.eval_on_selector_all("#feed li[data-kind='checkin.pending']", "rows => rows.length") == 0
        assert sum(int(n) for n in page.eval_on_selector_all("#chart rect.bar", "b => b.map(x => x.dataset.count)")) == 6
    finally:
        browser.close()


def test_without_its_built_files_the_root_says_how_to_build_them(tmp_path: Path) -> None:
    app = FastAPI()
    mount_console(app, tmp_path / "console_build")
    with TestClient(app) as client:
        page = client.get("/")
    assert page.status_code == 503 and "make install" in page.text
    assert "/" not in app.openapi()["paths"]


def test_the_console_is_served_at_the_root_and_leaves_the_api_alone(site: Site) -> None:
    page = httpx.get(site + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="(/assets/[^"]+)"', page.text)
    assert len(assets) >= 2
    for path in assets:
        r = httpx.get(site + path)
        assert r.status_code == 200 and "immutable" in r.headers["cache-control"]
    assert "cdn" not in page.text.lower() and "http" not in "".join(assets)
    openapi = httpx.get(site + "/openapi.json").json()
    assert "/" not in openapi["paths"] and not any(p.startswith("/assets") for p in openapi["paths"])
    assert httpx.get(site + "/docs").status_code == 200 and httpx.get(site + "/healthz").json() == {"status": "ok"}
    missing = httpx.get(site + "/no-such-path")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    assert httpx.get(site + "/assets/no-such-file.js").status_code == 404


def test_the_readme_shows_a_screenshot_of_each_page() -> None:
    readme = (REPO / "README.md").read_text()
    shown = set(re.findall(r"docs/screenshots/([\w-]+\.png)", readme))
    assert {"signin.png", "sessions.png", "dashboard.png", "kiosk.png", "kiosk-camera.png", "enrol.png"} <= shown
    for name in shown:
        assert (REPO / "docs" / "screenshots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
