"""Hostile images through the HTTP endpoints of a real `attendwise serve`
(the face model in process): not an image, truncated files, decompression
bombs, 50 MB bodies, EXIF orientation tricks. Each gets a clear 4xx
problem+json with its code, the process's memory stays bounded, and it keeps
answering (and verifying faces) afterwards. `decode` itself is fuzzed below."""

from __future__ import annotations

import datetime as dt
import io
import random
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from api.attendance_routes import MAX_PHOTO_BYTES
from ml.images import MAX_FULL_PIXELS, MAX_PROGRESSIVE_PIXELS, ImageRejected, decode
from tests.hostile.conftest import MB, Api, chunks, raw_post, serving
from tests.ml.conftest import need_faces
from tests.ml.test_enrolment_and_checkin import FRAMES, frame_for
from tests.processes import eventually

CHECKIN_PHOTO = "img16.jpg"  # the person of FRAMES, another photo


def encoded(img: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


def png_bomb(side: int) -> bytes:
    """A real greyscale PNG of side x side black pixels: ~140 KB for 12,000."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    z = zlib.compressobj(9)
    row = b"\0" * (side + 1)
    data = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def jpeg_claiming(width: int, height: int, photo: bytes) -> bytes:
    """A real JPEG whose frame header claims another size (the data stays small)."""
    at = photo.index(b"\xff\xc0") if b"\xff\xc0" in photo else photo.index(b"\xff\xc2")
    return photo[:at + 5] + struct.pack(">HH", height, width) + photo[at + 9:]


def with_orientation(photo: bytes, orientation: int, turn: Image.Transpose | None = None) -> bytes:
    """The photo stored turned by `turn` (as a phone stores it), tagged with an EXIF orientation."""
    img = Image.open(io.BytesIO(photo))
    if turn is not None:
        img = img.transpose(turn)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(img.convert("RGB"), "JPEG", quality=92, exif=exif.tobytes())


def hostile(photo: bytes) -> list[tuple[str, bytes, int, str]]:
    """(name, bytes, status, code) of files the face model must refuse before it looks for a face."""
    gif = encoded(Image.new("RGB", (64, 64)), "GIF")
    big = Image.new("RGB", (7999, 7999))
    return [
        ("text", b"not an image at all", 415, "IMAGE_UNSUPPORTED"),
        ("gif", gif, 415, "IMAGE_UNSUPPORTED"),
        ("svg", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', 415, "IMAGE_UNSUPPORTED"),
        ("jpeg magic then zeros", b"\xff\xd8\xff" + b"\0" * MB, 422, "IMAGE_UNREADABLE"),
        ("truncated jpeg", photo[: len(photo) // 3], 422, "IMAGE_UNREADABLE"),
        ("png bomb 144 MP", png_bomb(12_000), 413, "IMAGE_TOO_MANY_PIXELS"),
        ("jpeg claiming 65000 x 65000", jpeg_claiming(65_000, 65_000, photo), 413, "IMAGE_TOO_MANY_PIXELS"),
        ("webp 64 MP", encoded(big, "WEBP", quality=10), 413, "IMAGE_TOO_MANY_PIXELS"),
        ("progressive jpeg 64 MP", encoded(big, "JPEG", quality=10, progressive=True), 413,
         "IMAGE_TOO_MANY_PIXELS"),
    ]


@dataclass
class FaceStack:
    api: Api
    host: dict[str, str]
    ann: dict[str, str]  # enrolled
    eve: dict[str, str]  # never enrolled
    sessions: list[str]  # face check-in open now, ann has a place in each
    faces: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, model_home: Path) -> Iterator[FaceStack]:
    faces = need_faces()
    with serving(tmp_path_factory.mktemp("images"), ATTENDWISE_MODEL_DIR=str(model_home)) as api:
        host_id, host = api.sign_up("host@example.org")
        _, ann = api.sign_up("ann@example.org")
        _, eve = api.sign_up("eve@example.org")
        start = httpx.get(api.url + "/users/enroll-challenge", headers=ann).json()
        for challenge in start["challenges"]:  # the first frame loads the model (a few seconds)
            r = httpx.post(api.url + "/users/me/enroll-face", headers=ann, timeout=120,
                           data={"session_id": start["session_id"], "nonce": start["nonce"]},
                           files={"image": ("f.jpg", frame_for(faces, challenge), "image/jpeg")})
            assert r.status_code == 200 and r.json()["status"] != "CHALLENGE_FAILED_RETRY", r.text
        assert r.json()["status"] == "ENROLLED"
        begins = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=20)).replace(second=0, microsecond=0)
        series = httpx.post(api.url + "/series", headers=host, json={
            "title": "Lab", "host_ids": [host_id], "start": begins.replace(tzinfo=None).isoformat(),
            "time_zone": "UTC", "duration_minutes": 30, "rule": "FREQ=HOURLY;COUNT=3"}).json()
        query = "query($id: ID!) { series(id: $id) { sessions { edges { node { id } } } } }"

        def sessions() -> list[str] | None:
            body = httpx.post(api.url + "/graphql", json={"query": query, "variables": {"id": series["series_id"]}})
            found = body.json()["data"]["series"]
            edges = found["sessions"]["edges"] if found else []
            return [e["node"]["id"] for e in edges] if len(edges) == 3 else None

        ids = eventually(sessions)
        for sid in ids:
            r = httpx.put(f"{api.url}/sessions/{sid}/checkin-policy", headers=host,
                          json={"policy": "face", "opens_minutes": 180})
            assert r.status_code == 204, r.text
            assert httpx.post(f"{api.url}/sessions/{sid}/places", headers=ann, json={}).status_code == 200
        yield FaceStack(api, host, ann, eve, ids, faces)


def _problem(r: httpx.Response, status: int, code: str, name: str) -> None:
    assert r.status_code == status, f"{name}: {r.status_code} {r.text}"
    assert r.headers["content-type"] == "application/problem+json" and r.json()["code"] == code, f"{name}: {r.text}"


def test_hostile_enrolment_frames_are_refused_and_exif_orientation_is_honoured(stack: FaceStack) -> None:
    api, front = stack.api, frame_for(stack.faces, "front")
    start = httpx.get(api.url + "/users/enroll-challenge", headers=stack.eve).json()
    form = {"session_id": start["session_id"], "nonce": start["nonce"]}

    def send(photo: bytes, challenge: dict = form) -> httpx.Response:
        return httpx.post(api.url + "/users/me/enroll-face", headers=stack.eve, data=challenge, timeout=60,
                          files={"image": ("f.jpg", photo, "image/jpeg")})

    with api.peak_growth() as growth:
        for name, photo, status, code in hostile(front):
            _problem(send(photo), status, code, name)
    assert growth[0] < 100 * MB  # a 144 MP bomb alone would be 430 MB, the 64 MP WebP about 1 GB
    # refusals count as no attempt: the same challenge is still open
    for orientation, turn in ((6, Image.Transpose.ROTATE_90),  # stored sideways, tagged: read upright
                              (9, None), (0, None), (65535, None),  # no such orientation: ignored
                              (3, Image.Transpose.ROTATE_180), (2, Image.Transpose.FLIP_LEFT_RIGHT)):
        challenge = httpx.get(api.url + "/users/enroll-challenge", headers=stack.eve).json()
        r = send(with_orientation(front, orientation, turn),
                 {"session_id": challenge["session_id"], "nonce": challenge["nonce"]})
        assert r.status_code == 200 and r.json()["status"] == "CHALLENGE_PASSED_CONTINUE", (orientation, r.text)
    assert api.answers()


def test_hostile_checkin_photos_are_refused_and_recorded(stack: FaceStack) -> None:
    api, photo = stack.api, (stack.faces / CHECKIN_PHOTO).read_bytes()

    def check_in(session: str, image: bytes) -> httpx.Response:
        ticket = httpx.get(f"{api.url}/sessions/{session}/ticket", headers=stack.ann)
        assert ticket.status_code == 200, ticket.text
        token = ticket.json()["token"]
        return httpx.post(api.url + "/checkin", headers=stack.host, timeout=60,
                          data={"token": token, "device_id": "door"}, files={"image": ("p.jpg", image, "image/jpeg")})

    cases = hostile(photo)
    with api.peak_growth() as growth:
        for i, (name, image, status, code) in enumerate(cases):
            session = stack.sessions[i * len(stack.sessions) // len(cases)]  # at most 4 failures per session
            _problem(check_in(session, image), status, code, name)
    assert growth[0] < 100 * MB
    for session in stack.sessions:  # the model still verifies: a good photo checks in
        r = check_in(session, photo)
        assert r.status_code == 200 and r.json()["outcome"] == "succeeded", r.text

    def failed() -> list[str]:
        mine = httpx.post(api.url + "/graphql", headers=stack.ann, json={
            "query": "{ myCheckIns(first: 50) { edges { node { outcome reason } } } }"}).json()
        return sorted(e["node"]["reason"] for e in mine["data"]["myCheckIns"]["edges"]
                      if e["node"]["outcome"] == "FAILED")

    expected = sorted(code for *_, code in cases)
    eventually(lambda: failed() == expected, timeout=10)  # every refused photo: a failed attempt
    assert api.answers()


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_50_mb_body_is_refused_without_being_read(stack: FaceStack, declared: bool) -> None:
    api = stack.api
    multipart = {"Content-Type": "multipart/form-data; boundary=x"}
    endpoints = (("/checkin", stack.host, MAX_PHOTO_BYTES), ("/users/me/enroll-face", stack.eve, 8 * MB),
                 ("/media/upload", {}, 10 * MB), ("/graphql", stack.ann, 1_000_000), ("/users", {}, 1_000_000))
    with api.peak_growth() as growth:
        for path, auth, limit in endpoints:
            for key in (None, f"big-{path}-{declared}"):  # an idempotency key makes no difference
                headers = {**auth, **multipart, **({"Idempotency-Key": key} if key else {})}
                r = raw_post(api.url, path, headers, chunks(50 * MB), content_length=50 * MB if declared else None)
                assert r.status == 413 and r.body["code"] == "BODY_TOO_LARGE", (path, key, r)
                # the server read at most its limit (declared: nothing); the rest is socket buffers
                assert r.sent < (0 if declared else limit) + 20 * MB, (path, key, r.sent)
    assert growth[0] < 30 * MB
    assert api.answers()


# ------------------------------------------------------------------ decode, in process
def test_exif_orientation_turns_the_picture_and_junk_tags_are_ignored() -> None:
    wide = encoded(Image.new("RGB", (400, 200), (200, 30, 30)), "JPEG")
    for orientation, shape in ((1, (200, 400)), (6, (400, 200)), (8, (400, 200)), (3, (200, 400)),
                               (5, (400, 200)), (0, (200, 400)), (9, (200, 400)), (65535, (200, 400))):
        d = decode(with_orientation(wide, orientation))
        assert d.bgr.shape[:2] == shape and d.original_size == (400, 200), orientation
        assert d.scale == pytest.approx(1.0)
    for fmt in ("PNG", "WEBP"):  # the tag in PNG's eXIf chunk and WebP's EXIF chunk counts too
        exif = Image.Exif()
        exif[0x0112] = 6
        assert decode(encoded(Image.new("RGB", (400, 200)), fmt, exif=exif.tobytes())).bgr.shape[:2] == (400, 200)


def test_whole_image_decodes_have_smaller_pixel_budgets() -> None:
    for fmt, options, budget in (("PNG", {}, MAX_FULL_PIXELS), ("WEBP", {"quality": 10}, MAX_FULL_PIXELS),
                                 ("JPEG", {"progressive": True, "quality": 10}, MAX_PROGRESSIVE_PIXELS)):
        side = int(budget ** 0.5) + 1
        with pytest.raises(ImageRejected) as e:
            decode(encoded(Image.new("RGB", (side, side)), fmt, **options))
        assert e.value.code == "IMAGE_TOO_MANY_PIXELS" and e.value.status == 413, fmt
    side = int(MAX_PROGRESSIVE_PIXELS ** 0.5) + 1
    baseline = decode(encoded(Image.new("RGB", (side, side)), "JPEG", quality=10))  # decoded at 1/8 scale
    assert max(baseline.bgr.shape) <= 800


def test_corrupted_files_are_refused_with_a_code_never_another_error() -> None:
    rnd = random.Random(10)
    exif = Image.Exif()
    exif[0x0112] = 6
    picture = Image.radial_gradient("L").convert("RGB").resize((320, 240))
    codes: set[str] = set()
    for fmt in ("JPEG", "PNG", "WEBP"):
        good = encoded(picture, fmt, exif=exif.tobytes())
        for _ in range(300):
            bad = bytearray(good)
            for _ in range(rnd.choice((1, 3, 10))):
                bad[rnd.randrange(len(bad))] = rnd.randrange(256)
            if rnd.random() < 0.3:
                bad = bad[: rnd.randrange(4, len(bad))]
            try:
                decode(bytes(bad))
                codes.add("ok")
            except ImageRejected as e:
                codes.add(e.code)
    assert {"ok", "IMAGE_UNREADABLE", "IMAGE_UNSUPPORTED"} <= codes
