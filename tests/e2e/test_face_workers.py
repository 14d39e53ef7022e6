"""Enrolment and face check-in through the running stack: the model inside
the API (embedded) or in a separate `attendwise face-worker` process behind
NATS request/reply (full). When no worker answers, a face check-in waits as
pending (202): never a hang, never an accept."""

from __future__ import annotations

import datetime as dt
import uuid

import httpx

from api.bootstrap import build
from api.settings import Settings
from domain.scheduling import session_id
from tests.e2e.conftest import Stack
from tests.e2e.test_scheduling_api import sign_up
from tests.ml.conftest import need_faces
from tests.ml.test_enrolment_and_checkin import frame_for
from tests.processes import Proc, eventually


def test_enrol_and_check_in_by_face_with_the_model_in_process_or_in_workers(base_url: Stack, tmp_path) -> None:  # noqa: ANN001
    faces = need_faces()
    worker = None
    if base_url.mode == "full":
        worker = Proc(["face-worker"], base_url.env, tmp_path / "worker.log").start()
        eventually(lambda: "face_worker_ready" in worker.log or None, timeout=120)
    try:
        host, host_auth = sign_up(base_url, "host@example.org")
        ann, ann_auth = sign_up(base_url, "ann@example.org")
        start = httpx.get(base_url + "/users/enroll-challenge", headers=ann_auth).json()
        for challenge in start["challenges"]:
            r = httpx.post(base_url + "/users/me/enroll-face", headers=ann_auth, timeout=120,
                           data={"session_id": start["session_id"], "nonce": start["nonce"]},
                           files={"image": ("f.jpg", frame_for(faces, challenge), "image/jpeg")})
            assert r.status_code == 200 and r.json()["status"] != "CHALLENGE_FAILED_RETRY", r.text
        assert r.json()["status"] == "ENROLLED"

        begins = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=20)).replace(second=0, microsecond=0)
        series = httpx.post(base_url + "/series", headers=host_auth, json={
            "title": "Lab", "host_ids": [host], "start": begins.replace(tzinfo=None).isoformat(), "time_zone": "UTC",
            "duration_minutes": 60}).json()
        container = build(Settings(data_dir=base_url.data_dir, database_url=base_url.env.get("ATTENDWISE_DATABASE_URL"),
                                   nats_url=None, neo4j_uri=None, s3_endpoint=None, redis_url=None))
        series_id = uuid.UUID(series["series_id"])
        sid = str(session_id(series_id, container.app.get_series(series_id).occurrences()[0].original_start))
        container.close()
        assert httpx.post(f"{base_url}/sessions/{sid}/places", headers=ann_auth, json={}).status_code == 200

        def check_in(photo: str = "img16.jpg") -> httpx.Response:
            token = httpx.get(f"{base_url}/sessions/{sid}/ticket", headers=ann_auth).json()["token"]
            return httpx.post(base_url + "/checkin", headers=host_auth, timeout=60,
                              data={"token": token, "device_id": "door"},
                              files={"image": ("p.jpg", (faces / photo).read_bytes(), "image/jpeg")})
        r = check_in()
        assert r.status_code == 200 and r.json()["outcome"] == "succeeded", r.text
        # a phone's full-size photo (2.2 MB: more than NATS's default 1 MB message) reaches the workers too
        assert (faces / "img1.jpg").stat().st_size > 2**21
        r = check_in("img1.jpg")  # someone else holding ann's ticket
        assert r.status_code == 200 and (r.json()["outcome"], r.json()["reason"]) == ("failed", "FACE_MISMATCH"), r.text
        if worker is not None:
            worker.stop()
            worker = None
            r = check_in()
            assert r.status_code == 202 and r.json()["outcome"] == "pending", r.text
    finally:
        if worker is not None:
            worker.stop()
