"""The confirm step of uploads: image sniffing, the checks, valid keys."""

from __future__ import annotations

import pytest

from adapters.media import StoredObject, media_key
from domain.media import UploadMissing, UploadRejected, UploadTooLarge, UploadWrongType, check_upload, sniff_image
from domain.errors import InvalidInput

HEADS = {"image/png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
         "image/jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
         "image/webp": b"RIFF\x24\x00\x00\x00WEBPVP8 ",
         "image/gif": b"GIF87a\x01\x00\x01\x00"}


def stored(head: bytes = HEADS["image/png"], size: int = 100, content_type: str = "image/png") -> StoredObject:
    return StoredObject(key="avatars/a/b", size=size, content_type=content_type, head=head)


@pytest.mark.parametrize("image_type", sorted(HEADS))
def test_each_image_type_is_sniffed(image_type: str) -> None:
    assert sniff_image(HEADS[image_type]) == image_type


@pytest.mark.parametrize("head", [b"", b"\x89PN", b"GIF88a", b"RIFF\x24\x00\x00\x00WAVEfmt ", b"<svg xmlns=",
                                  b"%PDF-1.7", b"\x00\x00\x00\x18ftypavif"])
def test_anything_else_is_not_an_image(head: bytes) -> None:
    assert sniff_image(head) is None


def test_a_good_upload_passes() -> None:
    obj = stored(size=1000)
    assert check_upload(obj, "image/png", 1000) is obj


@pytest.mark.parametrize("obj", [None, stored(size=0)])
def test_nothing_uploaded_is_missing(obj: StoredObject | None) -> None:
    with pytest.raises(UploadMissing) as e:
        check_upload(obj, "image/png", 1000)
    assert e.value.code == "UPLOAD_MISSING"


def test_one_byte_over_is_too_large() -> None:
    with pytest.raises(UploadTooLarge) as e:
        check_upload(stored(size=1001), "image/png", 1000)
    assert (e.value.code, e.value.details["size"]) == ("UPLOAD_TOO_LARGE", 1001)


def test_a_declared_type_other_than_expected_is_wrong() -> None:
    with pytest.raises(UploadWrongType) as e:
        check_upload(stored(head=HEADS["image/gif"], content_type="image/gif"), "image/png", 1000)
    assert e.value.code == "UPLOAD_WRONG_TYPE"


@pytest.mark.parametrize("head", [HEADS["image/png"], b"<svg onload=alert(1)>"])
def test_bytes_that_are_not_the_declared_type_are_wrong(head: bytes) -> None:
    with pytest.raises(UploadWrongType) as e:
        check_upload(stored(head=head, content_type="image/jpeg"), "image/jpeg", 1000)
    assert e.value.details["sniffed"] == sniff_image(head)


def test_rejections_are_domain_errors_with_422() -> None:
    assert all(issubclass(c, UploadRejected) and c.status == 422 for c in (UploadMissing, UploadTooLarge, UploadWrongType))


@pytest.mark.parametrize("key", ["avatars/0b7e/1f2a", "posts/x.png", "a", "a_b-c.d/E9"])
def test_plain_keys_are_valid(key: str) -> None:
    assert media_key(key) == key


@pytest.mark.parametrize("key", ["", "..", "../a", "a/../b", "/a", "a/", "a//b", ".a", "a/.b", "a\\b", "a b", "ä",
                                 "a/" * 8 + "a", "a" * 129])
def test_keys_that_could_escape_or_hide_are_invalid(key: str) -> None:
    with pytest.raises(InvalidInput):
        media_key(key)
