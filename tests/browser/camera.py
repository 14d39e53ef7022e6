"""A fake camera for Chromium: a Y4M video (what
`--use-file-for-fake-video-capture` plays, looping) made of still pictures,
each shown for a while, e.g. a ticket's QR code and then a face."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

WIDTH, HEIGHT, FPS = 640, 480, 5


def framed(image: bytes | Image.Image, fill: int = 255, scale: float = 1.0) -> Image.Image:
    """The picture fitted into one video frame (`scale` of it), centred on grey `fill`."""
    picture = image if isinstance(image, Image.Image) else Image.open(io.BytesIO(image))
    picture = picture.convert("RGB")
    ratio = min(WIDTH / picture.width, HEIGHT / picture.height) * scale
    picture = picture.resize((max(1, round(picture.width * ratio)), max(1, round(picture.height * ratio))),
                             Image.LANCZOS)
    frame = Image.new("RGB", (WIDTH, HEIGHT), (fill, fill, fill))
    frame.paste(picture, ((WIDTH - picture.width) // 2, (HEIGHT - picture.height) // 2))
    return frame


def write_y4m(path: Path, scenes: list[tuple[Image.Image, float]]) -> Path:
    """Each (frame, seconds) in turn, as 4:2:0 Y'CbCr (full range, as JPEG)."""
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for frame, seconds in scenes:
            y, cb, cr = frame.convert("YCbCr").split()
            half = (WIDTH // 2, HEIGHT // 2)
            planes = y.tobytes() + cb.resize(half, Image.BILINEAR).tobytes() + cr.resize(half, Image.BILINEAR).tobytes()
            for _ in range(max(1, round(seconds * FPS))):
                out.write(b"FRAME\n" + planes)
    return path
