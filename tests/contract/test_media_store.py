"""Contract of the media store, driven like a client: real HTTP uploads
through the forms and downloads through the URLs, against local files (served
by api/media_routes.py under uvicorn) and the S3 server infra/ starts.

moto's S3 server checks no POST policy condition (size range, content type,
key, expiry, even the signature) and no presigned GET expiry. Where it accepts
what real S3 refuses, the test asserts that the confirm step
(`check_upload(store.stat(key), ...)`) refuses it: that step is what
guarantees a post never refers to a bad object. Expiry and key binding are
tested on the files adapter only."""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from adapters.errors import ServiceUnavailable
from adapters.media import FileMediaStore, MediaStore, S3MediaStore, UploadForm
from domain.media import UploadMissing, UploadTooLarge, UploadWrongType, check_upload
from api.media_routes import router
from domain.errors import InvalidInput
from tests.processes import free_port

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(96))
GIF = b"GIF89a" + bytes(50)
MINUTE = dt.timedelta(minutes=1)


@pytest.fixture(scope="module")
def media_app() -> Iterator[tuple[FastAPI, str]]:
    """The media routes on a minimal app, served over real HTTP."""
    app = FastAPI()
    app.include_router(router)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield app, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def files(media_app: tuple[FastAPI, str], tmp_path: Path) -> FileMediaStore:
    app, base_url = media_app
    app.state.media = store = FileMediaStore(tmp_path / "media", base_url, secrets.token_bytes(32))
    store.install()
    return store


@pytest.fixture
def s3(s3_endpoint: str) -> Iterator[S3MediaStore]:
    store = S3MediaStore(s3_endpoint, "attendwise", "attendwise-secret", f"t-{uuid.uuid4().hex[:12]}")
    store.install()
    yield store
    for obj in store.client.list_objects(store.bucket, recursive=True):
        store.client.remove_object(store.bucket, obj.object_name)
    store.client.remove_bucket(store.bucket)


@pytest.fixture(params=["files", "s3"])
def store(request: pytest.FixtureRequest) -> MediaStore:
    return request.getfixturevalue(request.param)


def new_key() -> str:
    return f"avatars/{uuid.uuid4()}/{uuid.uuid4()}"


def post(form: UploadForm, data: bytes, content_type: str, **fields: str) -> httpx.Response:
    """What a browser does with the form: its fields (some overridden), then the file."""
    return httpx.post(form.url, data={**form.fields, **fields}, files={"file": ("upload", data, content_type)})


def refused(response: httpx.Response, status: int, code: str) -> bool:
    return (response.status_code == status and response.headers["content-type"] == "application/problem+json"
            and response.json()["code"] == code)


def test_an_uploaded_object_is_stated_and_downloads(store: MediaStore) -> None:
    key = new_key()
    form = store.upload_form(key, "image/png", 1000, MINUTE)
    assert form.method == "POST" and form.expires_at > dt.datetime.now(dt.timezone.utc)
    assert post(form, PNG, "image/png").status_code == 204
    obj = store.stat(key)
    assert obj is not None and (obj.key, obj.size, obj.content_type, obj.head) == (key, len(PNG), "image/png", PNG[:32])
    assert check_upload(obj, "image/png", 1000) == obj
    got = httpx.get(store.download_url(key, MINUTE))
    assert got.status_code == 200 and got.content == PNG and got.headers["content-type"] == "image/png"


def test_install_is_idempotent_and_ping_passes(store: MediaStore) -> None:
    store.install()
    store.ping()


def test_more_than_max_bytes_is_refused(store: MediaStore) -> None:
    key = new_key()
    response = post(store.upload_form(key, "image/png", 50, MINUTE), PNG, "image/png")
    if isinstance(store, FileMediaStore):
        assert refused(response, 413, "UPLOAD_TOO_LARGE")
        assert store.stat(key) is None and not any((store.root / ".incoming").iterdir())
    else:  # moto ignores content-length-range (real S3: 400 EntityTooLarge); confirming refuses it
        assert response.status_code == 204
        with pytest.raises(UploadTooLarge):
            check_upload(store.stat(key), "image/png", 50)


def test_an_empty_upload_is_refused(store: MediaStore) -> None:
    key = new_key()
    response = post(store.upload_form(key, "image/png", 1000, MINUTE), b"", "image/png")
    if isinstance(store, FileMediaStore):
        assert refused(response, 422, "UPLOAD_MISSING") and store.stat(key) is None
    else:  # moto ignores content-length-range (real S3: 400 EntityTooSmall); confirming refuses it
        assert response.status_code == 204
        with pytest.raises(UploadMissing):
            check_upload(store.stat(key), "image/png", 1000)


def test_a_declared_type_other_than_the_forms_is_refused(store: MediaStore) -> None:
    key = new_key()
    response = post(store.upload_form(key, "image/png", 1000, MINUTE), GIF, "image/gif", **{"Content-Type": "image/gif"})
    if isinstance(store, FileMediaStore):
        assert refused(response, 415, "UPLOAD_WRONG_TYPE") and store.stat(key) is None
    else:  # moto ignores the Content-Type condition (real S3: 403); confirming refuses it
        assert response.status_code == 204
        with pytest.raises(UploadWrongType):
            check_upload(store.stat(key), "image/png", 1000)


def test_png_bytes_declared_jpeg_are_caught_by_sniffing(store: MediaStore) -> None:
    key = new_key()
    assert post(store.upload_form(key, "image/jpeg", 1000, MINUTE), PNG, "image/jpeg").status_code == 204
    obj = store.stat(key)
    assert obj is not None and obj.content_type == "image/jpeg"
    with pytest.raises(UploadWrongType) as e:
        check_upload(obj, "image/jpeg", 1000)
    assert e.value.details["sniffed"] == "image/png"


def test_a_missing_object_has_no_stat(store: MediaStore) -> None:
    key = new_key()
    assert store.stat(key) is None
    with pytest.raises(UploadMissing):
        check_upload(store.stat(key), "image/png", 1000)


def test_delete_removes_and_is_idempotent(store: MediaStore) -> None:
    key = new_key()
    assert post(store.upload_form(key, "image/png", 1000, MINUTE), PNG, "image/png").status_code == 204
    store.delete(key)
    assert store.stat(key) is None
    assert httpx.get(store.download_url(key, MINUTE)).status_code == 404
    store.delete(key)


@pytest.mark.parametrize("key", ["../escape", "avatars/../../escape", "/etc/passwd", ".hidden", "a//b",
                                 "a\\b", "a/./b", "", "a/" * 9 + "b"])
def test_keys_that_could_escape_are_refused(store: MediaStore, key: str) -> None:
    with pytest.raises(InvalidInput):
        store.upload_form(key, "image/png", 1000, MINUTE)
    with pytest.raises(InvalidInput):
        store.stat(key)


def test_unreachable_s3_names_the_setting() -> None:
    store = S3MediaStore("http://127.0.0.1:1", "attendwise", "attendwise-secret", "media")
    for call in (store.ping, store.install, lambda: store.stat(new_key())):
        with pytest.raises(ServiceUnavailable) as e:
            call()
        assert "S3" in str(e.value) and "ATTENDWISE_S3_ENDPOINT" in str(e.value)


# ---------------------------------------------------------------- files only (moto enforces none of this)
def test_an_expired_upload_form_is_refused(files: FileMediaStore) -> None:
    key = new_key()
    form = files.upload_form(key, "image/png", 1000, dt.timedelta(seconds=1))
    time.sleep(2)
    assert refused(post(form, PNG, "image/png"), 403, "MEDIA_TOKEN_REFUSED") and files.stat(key) is None


def test_an_expired_download_url_is_refused(files: FileMediaStore) -> None:
    key = new_key()
    assert post(files.upload_form(key, "image/png", 1000, MINUTE), PNG, "image/png").status_code == 204
    url = files.download_url(key, dt.timedelta(seconds=3))  # "exp" is whole seconds: valid for 2 to 3 s
    assert httpx.get(url).status_code == 200
    time.sleep(4)
    assert refused(httpx.get(url), 403, "MEDIA_TOKEN_REFUSED")


def test_tokens_are_bound_to_their_key_and_purpose(files: FileMediaStore) -> None:
    key, other = new_key(), new_key()
    form = files.upload_form(key, "image/png", 1000, MINUTE)
    assert refused(post(form, PNG, "image/png", key=other), 403, "MEDIA_TOKEN_REFUSED")
    assert files.stat(key) is None and files.stat(other) is None
    assert post(form, PNG, "image/png").status_code == 204
    url = files.download_url(key, MINUTE)
    assert refused(httpx.get(url.replace(key, other)), 403, "MEDIA_TOKEN_REFUSED")
    assert refused(httpx.get(url[:-3]), 403, "MEDIA_TOKEN_REFUSED")  # tampered signature
    upload_token = form.fields["token"]
    assert refused(httpx.get(f"{files.base_url}/media/files/{key}", params={"token": upload_token}),
                   403, "MEDIA_TOKEN_REFUSED")


def test_without_a_content_type_field_the_file_parts_type_counts(files: FileMediaStore) -> None:
    key = new_key()
    form = files.upload_form(key, "image/png", 1000, MINUTE)
    assert refused(post(form, PNG, "image/gif"), 415, "UPLOAD_WRONG_TYPE")
    assert post(form, PNG, "image/png").status_code == 204


def test_an_upload_needs_its_fields_before_the_file(files: FileMediaStore) -> None:
    key = new_key()
    form = files.upload_form(key, "image/png", 1000, MINUTE)
    no_file = httpx.post(form.url, files={"key": (None, key), "token": (None, form.fields["token"])})
    assert refused(no_file, 422, "UPLOAD_MISSING")
    file_first = httpx.post(form.url, files=[("file", ("upload", PNG, "image/png")), ("key", (None, key)),
                                             ("token", (None, form.fields["token"]))])
    assert refused(file_first, 403, "MEDIA_TOKEN_REFUSED")
    assert refused(httpx.post(form.url, json=form.fields), 422, "INVALID_INPUT")
    assert files.stat(key) is None and not any((files.root / ".incoming").iterdir())
