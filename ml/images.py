"""Safe image decoding for the face model.

Photos come from members' phones: anything can arrive. `decode(data)`:

- refuses more than `max_bytes` (IMAGE_TOO_LARGE, 413) before parsing;
- accepts JPEG, PNG and WebP only, recognised by their magic bytes and by
  Pillow (IMAGE_UNSUPPORTED, 415);
- reads the pixel size from the header and refuses more than `max_pixels`
  before decoding anything (IMAGE_TOO_MANY_PIXELS, 413): a decompression bomb
  (a few KB of PNG that inflate to gigabytes) is never inflated; Pillow's own
  bomb check is kept as a second net;
- PNG and WebP have no reduced-scale decode, so they get a smaller budget,
  `max_full_pixels` (12 MP: a 4000x3000 frame; webcams and screenshots are
  far smaller): a 64 MP WebP of 135 KB decodes through about 1 GB, a 12 MP
  one through under 200 MB. A progressive JPEG (most photos from the web)
  buffers all its coefficients whatever the scale: `max_progressive_pixels`
  (24 MP, about 140 MB; 64 MP would be 370 MB from a 750 KB file);
- decodes JPEG at a reduced scale straight from the DCT (`draft`), so a
  48-megapixel photo costs a 6-megapixel decode;
- applies the EXIF orientation (a portrait photo from a phone is stored
  sideways with a tag saying so);
- downscales to at most `max_side` pixels (800 by default) on the longer side:
  detection on full-size photos took 1.7 s and 3.3 GB, and a face filling a
  selfie is still ~300 px wide at 800;
- returns an 8-bit BGR array (OpenCV's and deepface's order), first frame
  only for animated files; a broken or truncated file is IMAGE_UNREADABLE (422).
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from domain.errors import DomainError

MAX_BYTES = 8 * 1024 * 1024
MAX_PIXELS = 64_000_000  # 64 MP: a phone's 48/50 MP photo passes, 108/200 MP modes do not
MAX_FULL_PIXELS = 12_000_000  # PNG and WebP, decoded at full size (a baseline JPEG is decoded at 1/2 to 1/8)
MAX_PROGRESSIVE_PIXELS = 24_000_000  # a progressive JPEG, whose coefficients are all kept while it decodes
MAX_SIDE = 800
FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


class ImageRejected(DomainError):
    """A photo the face model will not read. `code` says why."""

    code = "IMAGE_UNREADABLE"
    status = 422

    def __init__(self, code: str, message: str, status: int = 422, **details: object) -> None:
        super().__init__(message, **details)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class DecodedImage:
    bgr: np.ndarray  # H x W x 3, uint8, BGR, at most max_side on the longer side
    format: str  # JPEG, PNG or WEBP
    original_size: tuple[int, int]  # (width, height) as stored, before orientation
    scale: float  # decoded width / oriented original width (<= 1)


def _sniff(data: bytes) -> str | None:
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def decode(data: bytes, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS,
           max_full_pixels: int = MAX_FULL_PIXELS, max_progressive_pixels: int = MAX_PROGRESSIVE_PIXELS,
           max_side: int = MAX_SIDE) -> DecodedImage:
    if len(data) > max_bytes:
        raise ImageRejected("IMAGE_TOO_LARGE", f"the image is {len(data):,} bytes; at most {max_bytes:,} are accepted",
                            status=413, size=len(data), limit=max_bytes)
    if not data:
        raise ImageRejected("IMAGE_UNREADABLE", "the image is empty")
    sniffed = _sniff(data)
    if sniffed is None:
        raise ImageRejected("IMAGE_UNSUPPORTED", "only JPEG, PNG and WebP photos are accepted", status=415)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=[sniffed])
            width, height = img.size
            progressive = sniffed == "JPEG" and bool(img.info.get("progressive"))
            limit = min(max_pixels, max_progressive_pixels if progressive else
                        max_pixels if sniffed == "JPEG" else max_full_pixels)
            if width * height > limit:
                kind = f"{'a progressive ' if progressive else ''}{sniffed}"
                raise ImageRejected("IMAGE_TOO_MANY_PIXELS", f"the image is {width}x{height} pixels; at most "
                                    f"{limit:,} pixels are accepted for {kind}",
                                    status=413, width=width, height=height, limit=limit)
            if width < 1 or height < 1:
                raise ImageRejected("IMAGE_UNREADABLE", "the image has no pixels")
            if img.format == "JPEG" and max(width, height) > max_side:
                # decode at 1/2, 1/4 or 1/8 scale when that still covers the downscaled size
                fit = max_side / max(width, height)
                img.draft("RGB", (math.ceil(width * fit), math.ceil(height * fit)))
            img.seek(0)
            img.load()
            swapped = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientations turned by 90 degrees
            img = ImageOps.exif_transpose(img)
            if img.mode != "RGB":
                img = img.convert("RGB")
            oriented_width = height if swapped else width
            if max(img.size) > max_side:
                img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
            rgb = np.asarray(img, dtype=np.uint8)
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageRejected("IMAGE_TOO_MANY_PIXELS", f"the image would inflate too far: {e}", status=413) from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        raise ImageRejected("IMAGE_UNREADABLE", f"the image cannot be read: {e}") from e
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageRejected("IMAGE_UNREADABLE", "the image has no colour channels")
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    return DecodedImage(bgr, sniffed, (width, height), bgr.shape[1] / oriented_width)
