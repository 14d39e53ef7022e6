"""Media storage for avatars and post images. Port `MediaStore`; adapters
`S3MediaStore` (any S3 API, through the minio SDK) and `FileMediaStore` (the
embedded default: files under a folder, served by api/media_routes.py).

Clients never send image bytes through the API: they ask for an upload form,
POST the file straight to storage, then confirm. Only a confirmed upload may be
referred to: `check_upload(store.stat(key), ...)` proves that the object exists,
that it is no larger than allowed, and that its declared type and its bytes
are the expected image type. The form's own conditions are a first line only;
some stores do not enforce them (moto's S3 server enforces none).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import urlsplit

import jwt

from adapters.errors import ServiceUnavailable
from domain.errors import DomainError, InvalidInput, NotFound
from domain.media import UploadMissing, UploadTooLarge

HEAD_BYTES = 32
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_KEY = re.compile(rf"{_SEGMENT}(/{_SEGMENT}){{0,7}}")


# ---------------------------------------------------------------- values and rules
@dataclass(frozen=True)
class UploadForm:
    """An HTML-form style upload: POST multipart/form-data to `url` with every
    field of `fields` (in order, as text parts) and then the file as the part
    named `file`, before `expires_at`."""

    url: str
    fields: dict[str, str]
    expires_at: dt.datetime
    method: str = "POST"


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    content_type: str
    head: bytes  # the first HEAD_BYTES bytes, for sniffing the real type


class MediaTokenRefused(DomainError):
    """A FileMediaStore upload or download token is invalid, expired or for another key."""

    code = "MEDIA_TOKEN_REFUSED"
    status = 403


def media_key(key: str) -> str:
    """`key` if it is a valid object key: 1 to 8 '/'-separated segments of
    letters, digits, '.', '_' and '-', each starting with a letter or digit
    (so no '..', no hidden files, no absolute paths). InvalidInput otherwise."""
    if not _KEY.fullmatch(key):
        raise InvalidInput("not a valid media key", key=key[:200])
    return key


# ---------------------------------------------------------------- port
class MediaStore(Protocol):
    """Objects under keys (see `media_key`), uploaded and downloaded by
    clients directly through expiring URLs."""

    def install(self) -> None:
        """Create the bucket or folder; idempotent, safe to run concurrently."""

    def upload_form(self, key: str, content_type: str, max_bytes: int, expires: dt.timedelta) -> UploadForm:
        """A form allowing one POST of the object `key`, declared as exactly
        `content_type`, of 1 to `max_bytes` bytes, for `expires`. Signing
        needs no round trip to the store. The store may not enforce every
        condition: confirm with `check_upload(stat(key), ...)`."""

    def stat(self, key: str) -> StoredObject | None:
        """The stored object under `key`, or None when there is none."""

    def download_url(self, key: str, expires: dt.timedelta) -> str:
        """A URL anyone holding it can GET the object from, for `expires`
        (1 second to 7 days); it answers with the stored content type."""

    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing one is not an error."""

    def ping(self) -> None:
        """Raise ServiceUnavailable when the store cannot be used."""


# ---------------------------------------------------------------- S3
class S3MediaStore:
    """One bucket on an S3 API. Uploads use presigned POST policies (the only
    presigned upload that can fix a size range and the content type);
    downloads use presigned GET URLs. Unreachable or failing S3 raises
    ServiceUnavailable naming `setting`."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, bucket: str,
                 region: str = "us-east-1", setting: str = "ATTENDWISE_S3_ENDPOINT") -> None:
        import certifi
        import urllib3
        from minio import Minio
        from minio.error import MinioException

        self._errors = (MinioException, urllib3.exceptions.HTTPError, OSError)
        self.endpoint = endpoint.rstrip("/")
        self.bucket = bucket
        self.setting = setting
        self.client = Minio(urlsplit(self.endpoint).netloc, access_key=access_key, secret_key=secret_key,
                            secure=self.endpoint.startswith("https"), region=region,
                            http_client=urllib3.PoolManager(
                                timeout=urllib3.Timeout(connect=3, read=30), cert_reqs="CERT_REQUIRED",
                                ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
                                retries=urllib3.Retry(total=2, backoff_factor=0.2,
                                                      status_forcelist=[500, 502, 503, 504])))

    def _unavailable(self, e: Exception) -> ServiceUnavailable:
        return ServiceUnavailable("S3", self.setting, self.endpoint, e)

    def install(self) -> None:
        from minio.error import S3Error

        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
        except S3Error as e:
            if e.code != "BucketAlreadyOwnedByYou":  # another process made it first
                raise self._unavailable(e) from e
        except self._errors as e:
            raise self._unavailable(e) from e

    def upload_form(self, key: str, content_type: str, max_bytes: int, expires: dt.timedelta) -> UploadForm:
        from minio.datatypes import PostPolicy

        expires_at = dt.datetime.now(dt.timezone.utc) + expires
        policy = PostPolicy(self.bucket, expires_at)
        policy.add_equals_condition("key", media_key(key))
        policy.add_equals_condition("Content-Type", content_type)
        policy.add_content_length_range_condition(1, max_bytes)
        fields = {"key": key, "Content-Type": content_type, **self.client.presigned_post_policy(policy)}
        return UploadForm(url=f"{self.endpoint}/{self.bucket}", fields=fields, expires_at=expires_at)

    def stat(self, key: str) -> StoredObject | None:
        from minio.error import S3Error

        try:
            info = self.client.stat_object(self.bucket, media_key(key))
            head = b""
            if info.size:  # a range of an empty object is an error
                response = self.client.get_object(self.bucket, key, offset=0, length=HEAD_BYTES)
                try:
                    head = response.read()
                finally:
                    response.close()
                    response.release_conn()
        except S3Error as e:
            if e.code == "NoSuchKey":
                return None
            raise self._unavailable(e) from e
        except self._errors as e:
            raise self._unavailable(e) from e
        return StoredObject(key=key, size=info.size or 0,
                            content_type=info.content_type or "application/octet-stream", head=head)

    def download_url(self, key: str, expires: dt.timedelta) -> str:
        return self.client.presigned_get_object(self.bucket, media_key(key), expires=expires)

    def delete(self, key: str) -> None:
        try:
            self.client.remove_object(self.bucket, media_key(key))
        except self._errors as e:
            raise self._unavailable(e) from e

    def ping(self) -> None:
        try:
            exists = self.client.bucket_exists(self.bucket)
        except self._errors as e:
            raise self._unavailable(e) from e
        if not exists:
            raise self._unavailable(RuntimeError(f"bucket {self.bucket!r} does not exist (not installed)"))


# ---------------------------------------------------------------- files
@dataclass(frozen=True)
class UploadGrant:
    """What a valid FileMediaStore upload token allows."""

    key: str
    content_type: str
    max_bytes: int


class FileMediaStore:
    """Objects as files under `root` (the key is the relative path), each
    with its content type in a sidecar `.<name>.json` beside it (keys never
    start a segment with '.', so sidecars and the `.incoming` folder of
    partial uploads cannot collide with objects). One key cannot be the
    folder of another.

    Its URLs point at api/media_routes.py under `base_url`; they carry HS256
    tokens signed with `secret` (at least 32 bytes) that fix the key, expiry
    and, for uploads, the content type and size limit."""

    def __init__(self, root: Path, base_url: str, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("the media token secret needs at least 32 bytes")
        self.root = root
        self.base_url = base_url.rstrip("/")
        self._secret = secret

    def _path(self, key: str) -> Path:
        return self.root / media_key(key)

    @staticmethod
    def _sidecar(path: Path) -> Path:
        return path.with_name(f".{path.name}.json")

    def _sign(self, typ: str, key: str, expires_at: dt.datetime, **claims: object) -> str:
        return jwt.encode({"typ": typ, "key": key, "exp": expires_at, **claims}, self._secret, algorithm="HS256")

    def _verify(self, token: str, typ: str, key: str) -> dict[str, Any]:
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"], options={"require": ["exp", "typ", "key"]})
        except jwt.ExpiredSignatureError as e:
            raise MediaTokenRefused("the media token has expired") from e
        except jwt.InvalidTokenError as e:
            raise MediaTokenRefused("the media token is not valid") from e
        if claims["typ"] != typ or claims["key"] != key:
            raise MediaTokenRefused(f"the media token is not a {typ} token for this key")
        return claims

    def install(self) -> None:
        (self.root / ".incoming").mkdir(parents=True, exist_ok=True)

    def upload_form(self, key: str, content_type: str, max_bytes: int, expires: dt.timedelta) -> UploadForm:
        expires_at = dt.datetime.now(dt.timezone.utc) + expires
        token = self._sign("media-upload", media_key(key), expires_at, ct=content_type, max=max_bytes)
        return UploadForm(url=f"{self.base_url}/media/upload", fields={"key": key, "token": token},
                          expires_at=expires_at)

    def stat(self, key: str) -> StoredObject | None:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                head = f.read(HEAD_BYTES)
                size = os.fstat(f.fileno()).st_size
            content_type = json.loads(self._sidecar(path).read_text())["content_type"]
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        return StoredObject(key=key, size=size, content_type=content_type, head=head)

    def download_url(self, key: str, expires: dt.timedelta) -> str:
        token = self._sign("media-download", media_key(key), dt.datetime.now(dt.timezone.utc) + expires)
        return f"{self.base_url}/media/files/{key}?token={token}"

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        self._sidecar(path).unlink(missing_ok=True)

    def ping(self) -> None:
        incoming = self.root / ".incoming"
        if not (incoming.is_dir() and os.access(incoming, os.W_OK)):
            raise ServiceUnavailable("media files", "ATTENDWISE_DATA_DIR", str(self.root),
                                     "not a writable, installed folder")

    # -- used by api/media_routes.py
    def grant(self, token: str, key: str) -> UploadGrant:
        """What `token` allows uploading under `key`; MediaTokenRefused if it
        is invalid, expired, or was issued for another key."""
        claims = self._verify(token, "media-upload", key)
        return UploadGrant(key=key, content_type=claims["ct"], max_bytes=claims["max"])

    def receive(self, grant: UploadGrant) -> IncomingFile:
        """A partial upload for `grant`, invisible until committed."""
        return IncomingFile(self, grant)

    def download(self, token: str, key: str) -> tuple[Path, str]:
        """The file and content type `token` lets a client GET under `key`:
        MediaTokenRefused for a bad token, NotFound when there is no object."""
        self._verify(token, "media-download", key)
        obj = self.stat(key)
        if obj is None:
            raise NotFound("no media under this key")
        return self._path(key), obj.content_type

    def _commit(self, grant: UploadGrant, part: Path) -> None:
        path = self._path(grant.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=self.root / ".incoming", delete=False) as meta:
            json.dump({"content_type": grant.content_type}, meta)
        os.replace(meta.name, self._sidecar(path))  # the type lands before the bytes it describes
        os.replace(part, path)


class IncomingFile:
    """An upload being received: written to a temporary file under
    `.incoming`, moved into place (atomically) by `commit`, removed by `abort`."""

    def __init__(self, store: FileMediaStore, grant: UploadGrant) -> None:
        self.store, self.grant, self.size = store, grant, 0
        self._file: IO[bytes] = tempfile.NamedTemporaryFile(dir=store.root / ".incoming", delete=False)

    def write(self, data: bytes) -> None:
        """Append `data`; UploadTooLarge (writing nothing) once the upload
        would pass the grant's limit."""
        self.size += len(data)
        if self.size > self.grant.max_bytes:
            raise UploadTooLarge(f"the upload is larger than {self.grant.max_bytes} bytes",
                                 max_bytes=self.grant.max_bytes)
        self._file.write(data)

    def commit(self) -> None:
        """Make the upload the object under its key; UploadMissing if it is empty."""
        if self.size == 0:
            raise UploadMissing("the uploaded file is empty")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self.store._commit(self.grant, Path(self._file.name))

    def abort(self) -> None:
        self._file.close()
        Path(self._file.name).unlink(missing_ok=True)
