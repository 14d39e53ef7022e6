"""Enrolment through the liveness challenge and face check-in, with the real
model on real photos (../shared/faces), over the API in one process.

One person's photos answer the challenges: img62 is frontal, img17 smiles,
img61 is turned to the person's right, and img61 mirrored is turned to their
left. Replaying one photo for every challenge fails, and five failures lock
enrolment."""

from __future__ import annotations

import datetime as dt
import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageOps

from api.bootstrap import build
from api.http import create_app
from api.settings import Settings
from domain.scheduling import session_id
from tests.integration.test_communities import World

FRAMES = {"front": "img62.jpg", "smile": "img17.jpg", "turn_right": "img61.jpg"}


def mirrored(photo: bytes) -> bytes:
    out = io.BytesIO()
    ImageOps.mirror(Image.open(io.BytesIO(photo))).save(out, format="JPEG", quality=95)
    return out.getvalue()


@pytest.fixture
def world(tmp_path: Path, model_home: Path, faces: Path) -> Iterator[World]:
    container = build(Settings(data_dir=tmp_path, database_url=None, nats_url=None, redis_url=None,
                               neo4j_uri=None, s3_endpoint=None, rate_limits=False, model_dir=model_home))
    assert container.app.analyzer is not None, "the face model is provisioned"
    with TestClient(create_app(container)) as client:
        yield World(client, container)
    container.close()


def frame_for(faces: Path, challenge: str) -> bytes:
    if challenge == "turn_left":
        return mirrored((faces / FRAMES["turn_right"]).read_bytes())
    return (faces / FRAMES[challenge]).read_bytes()


def send(w: World, who: str, start: dict, photo: bytes) -> tuple[int, dict]:
    r = w.client.post("/users/me/enroll-face", headers=w.auth[who], files={"image": ("f.jpg", photo, "image/jpeg")},
                      data={"session_id": start["session_id"], "nonce": start["nonce"]})
    return r.status_code, r.json()


def enrol(w: World, who: str, faces: Path) -> dict:
    start = w.call(who, "GET", "/users/enroll-challenge", 200)
    assert start["challenges"][0] == "front" and len(start["challenges"]) >= 3
    answer: dict = {}
    for i, challenge in enumerate(start["challenges"]):
        status, answer = send(w, who, start, frame_for(faces, challenge))
        assert status == 200, answer
        expected = "ENROLLED" if i == len(start["challenges"]) - 1 else "CHALLENGE_PASSED_CONTINUE"
        assert answer["status"] == expected, (challenge, answer)
    return answer


def test_a_member_enrols_through_the_challenge_then_checks_in_by_face(world: World, faces: Path) -> None:
    w = world
    w.person("host"), w.person("ann"), w.person("eve")
    done = enrol(w, "ann", faces)
    assert done["model"] == w.c.app.analyzer.model and done["model_version"] == w.c.app.analyzer.model_version

    # the template is sealed everywhere but in its aggregate
    enrolled = [e for e in w.c.event_log.read(0, 10_000) if e.event_type == "FaceEnrolmentEnrolled"]
    assert len(enrolled) == 1 and enrolled[0].data["template"].startswith("enc:v1:")
    assert enrolled[0].data["threshold"] == w.c.app.analyzer.threshold

    now = dt.datetime.now(dt.timezone.utc)
    start = (now + dt.timedelta(minutes=20)).replace(second=0, microsecond=0, tzinfo=None)
    series = w.call("host", "POST", "/series", 201, json={"title": "Lab", "host_ids": [w.ids["host"]],
                                                          "start": start.isoformat(), "time_zone": "UTC",
                                                          "duration_minutes": 60})
    sid = str(session_id(uuid.UUID(series["series_id"]),
                         w.c.app.get_series(uuid.UUID(series["series_id"])).occurrences()[0].original_start))
    for name in ("ann", "eve"):
        w.call(name, "POST", f"/sessions/{sid}/places", 200, json={})

    def check_in(who: str, photo: str) -> dict:
        token = w.call(who, "GET", f"/sessions/{sid}/ticket", 200)["token"]
        r = w.client.post("/checkin", headers=w.auth["host"], data={"token": token, "device_id": "door"},
                          files={"image": ("p.jpg", (faces / photo).read_bytes(), "image/jpeg")})
        return r.json()
    same = check_in("ann", "img16.jpg")  # another photo of the same person
    assert same["outcome"] == "succeeded" and same["face"]["distance"] <= same["face"]["threshold"]
    assert same["face"]["model_version"] == w.c.app.analyzer.model_version and same["face"]["confidence"] > 0.5
    other = check_in("ann", "img1.jpg")  # someone else holding ann's ticket
    assert other["outcome"] == "failed" and other["reason"] == "FACE_MISMATCH"
    assert other["face"]["distance"] > other["face"]["threshold"]
    assert check_in("ann", "couple.jpg")["code"] == "SEVERAL_FACES"
    assert check_in("eve", "img16.jpg")["code"] == "FACE_NOT_ENROLLED"


def test_replaying_one_photo_for_every_challenge_fails_and_five_failures_lock(world: World, faces: Path) -> None:
    w = world
    w.person("mallory")
    photo = (faces / FRAMES["front"]).read_bytes()
    start = w.call("mallory", "GET", "/users/enroll-challenge", 200)
    assert send(w, "mallory", start, photo)[1]["status"] == "CHALLENGE_PASSED_CONTINUE"  # the front is fine
    failures = []
    for _ in range(5):
        status, answer = send(w, "mallory", start, photo)
        failures.append((status, answer.get("status"), answer.get("reason") or answer.get("code")))
    assert failures[:4] == [(200, "CHALLENGE_FAILED_RETRY", failures[0][2])] * 4
    assert failures[0][2] in ("wrong_pose", "not_smiling")
    assert (failures[4][0], failures[4][2]) == (429, "ENROLMENT_LOCKED")
    locked = w.client.get("/users/enroll-challenge", headers=w.auth["mallory"])
    assert locked.status_code == 429 and locked.json()["code"] == "ENROLMENT_LOCKED"
    another = (faces / "img1.jpg").read_bytes()  # and a stranger swapped in is refused as such
    w.person("trudy")
    start = w.call("trudy", "GET", "/users/enroll-challenge", 200)
    send(w, "trudy", start, photo)
    status, answer = send(w, "trudy", start, another)
    assert answer["reason"] == "different_person"
