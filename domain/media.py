"""Media: images people upload (avatars, pictures in posts).

Bytes never pass through the log or the API: the client uploads straight to
object storage through a form that fixes type, size and expiry. An `Upload`
is requested first and confirmed once the stored object has been checked;
only a confirmed upload may be shown on a profile or attached to a post.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Protocol

from eventsourcing.domain import Aggregate, event

from domain.base import AttendWiseAggregate
from domain.errors import DomainError, InvalidInput

IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")
PURPOSES = {"avatar": 5 * 1024 * 1024, "post_image": 10 * 1024 * 1024}  # purpose -> largest size in bytes
UPLOAD_WINDOW = dt.timedelta(minutes=15)


class UploadNotConfirmed(DomainError):
    code = "UPLOAD_NOT_CONFIRMED"
    status = 409


def check_upload_request(purpose: str, content_type: str, size: int) -> int:
    """Returns the size limit for this purpose."""
    if purpose not in PURPOSES:
        raise InvalidInput(f"purpose must be one of {', '.join(PURPOSES)}", field="purpose")
    if content_type not in IMAGE_TYPES:
        raise InvalidInput(f"content type must be one of {', '.join(IMAGE_TYPES)}", field="content_type")
    limit = PURPOSES[purpose]
    if not 1 <= size <= limit:
        raise InvalidInput(f"a {purpose.replace('_', ' ')} may have 1 to {limit:,} bytes", field="size")
    return limit


class Upload(AttendWiseAggregate):
    CONTEXT = "media"

    class Requested(Aggregate.Created):
        owner_id: str
        purpose: str
        key: str  # the object's key in storage
        content_type: str
        max_bytes: int

    @event(Requested)
    def __init__(self, owner_id: str, purpose: str, key: str, content_type: str, max_bytes: int) -> None:
        self.owner_id, self.purpose, self.key = owner_id, purpose, key
        self.content_type, self.max_bytes = content_type, max_bytes
        self.size: int | None = None

    @classmethod
    def request(cls, owner_id: uuid.UUID, purpose: str, content_type: str, size: int) -> "Upload":
        limit = check_upload_request(purpose, content_type, size)
        upload_id = uuid.uuid4()
        key = f"{purpose}/{owner_id}/{upload_id}"
        return cls._create(cls.Requested, id=upload_id, owner_id=str(owner_id), purpose=purpose, key=key,
                           content_type=content_type, max_bytes=limit)

    @property
    def confirmed(self) -> bool:
        return self.size is not None

    class Confirmed(Aggregate.Event):
        size: int

    def confirm(self, size: int) -> bool:
        if self.confirmed:
            return False
        self._confirmed(size)
        return True

    @event(Confirmed)
    def _confirmed(self, size: int) -> None:
        self.size = size

    def check_usable(self, owner_id: uuid.UUID | str, purpose: str) -> None:
        """Only your own confirmed upload, of the right kind, may be used."""
        if self.owner_id != str(owner_id) or self.purpose != purpose:
            raise InvalidInput(f"upload {self.id} is not one of your {purpose.replace('_', ' ')}s", field="media")
        if not self.confirmed:
            raise UploadNotConfirmed(f"upload {self.id} has not been confirmed yet")



class StoredImage(Protocol):
    """What storage says about an uploaded object (`MediaStore.stat`)."""

    size: int
    content_type: str
    head: bytes  # its first bytes


class UploadRejected(DomainError):
    """An upload cannot be referred to (422 when confirming it)."""

    code = "UPLOAD_REJECTED"
    status = 422


class UploadMissing(UploadRejected):
    code = "UPLOAD_MISSING"


class UploadTooLarge(UploadRejected):
    code = "UPLOAD_TOO_LARGE"


class UploadWrongType(UploadRejected):
    code = "UPLOAD_WRONG_TYPE"



def sniff_image(head: bytes) -> str | None:
    """The image type (one of IMAGE_TYPES) the magic bytes at the start of a file say, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


def check_upload(obj: StoredImage | None, expected_type: str, max_bytes: int) -> StoredImage:
    """Confirm an upload (`obj` from MediaStore.stat): it exists and is not
    empty (else UploadMissing), has at most `max_bytes` bytes (UploadTooLarge),
    and both its stored content type and its bytes are `expected_type`, one of
    IMAGE_TYPES (UploadWrongType)."""
    if obj is None or obj.size == 0:
        raise UploadMissing("nothing was uploaded under this key")
    if obj.size > max_bytes:
        raise UploadTooLarge(f"the upload has {obj.size} bytes, more than {max_bytes}",
                             size=obj.size, max_bytes=max_bytes)
    if obj.content_type != expected_type:
        raise UploadWrongType(f"the upload was declared {obj.content_type!r}, not {expected_type!r}",
                              content_type=obj.content_type, expected=expected_type)
    sniffed = sniff_image(obj.head)
    if sniffed != expected_type:
        raise UploadWrongType(f"the upload's bytes are {sniffed or 'not an image'}, not {expected_type}",
                              sniffed=sniffed, expected=expected_type)
    return obj
