"""The face model behind the ports of adapters/face.py.

`DeepFaceVerifier(engine)` is both:

- a `FaceAnalyzer` (enrolment frames and the face workers):
  `analyse(image, mirrored)` -> `FrameAnalysis(failure, yaw, mouth, embedding)`,
  `distance(a, b)`, and `model`, `model_version`, `threshold`;
- a `FaceVerifier` (check-in): `verify(template, image)` -> `FaceVerdict`,
  raising `NoFace` / `SeveralFaces` for a photo without exactly one person.

Templates and embeddings are bytes: the 512 float32 values of the
embedding as deepface gives it (`np.float32` `tobytes()`, native
little-endian, 2,048 bytes, not normalised: the distance is a cosine). The
caller encrypts templates at rest; they are bound to `model_version`.

Confidence (`adapters.face.confidence`): a logistic curve of the distance d
around the threshold t, 1 / (1 + exp((d - t) / 0.05)): 0.5 at the threshold,
0.88 at t - 0.1, 0.98 at t - 0.2 (a typical same-person distance here is
0.15-0.30), 0.12 at t + 0.1. It says how far from the line a verdict fell,
not a calibrated probability.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adapters.face import FaceVerdict, FrameAnalysis, NoFace, SeveralFaces, confidence, cosine_distance
from domain.errors import DomainError
from ml.engine import Analysis, FaceEngine

EMBEDDING_SIZE = 512
TEMPLATE_BYTES = EMBEDDING_SIZE * 4


class FrameRefused(DomainError):
    """One face was found but the frame cannot be used: `code` is TOO_SMALL,
    TOO_DARK, BLURRED or SPOOF."""

    status = 422

    def __init__(self, code: str, message: str, **details: object) -> None:
        super().__init__(message, **details)
        self.code = code


MESSAGES = {
    "no_face": "no face was found in the photo",
    "several_faces": "the photo shows several faces; one person at a time",
    "too_small": "the face is too small: come closer to the camera",
    "too_dark": "the face is too dark: find more light",
    "blurred": "the photo is blurred: hold still",
    "spoof": "the photo looks like a photo of a photo or a screen",
}


def _as_vector(template: bytes) -> np.ndarray:
    if len(template) != TEMPLATE_BYTES:
        raise ValueError(f"a template is {TEMPLATE_BYTES} bytes ({EMBEDDING_SIZE} float32), not {len(template)}")
    return np.frombuffer(template, dtype=np.float32)


class DeepFaceVerifier:
    """Face analysis and verification on a `FaceEngine` (warmed on first use;
    call `warm()` at worker start to pay the 3-5 s there)."""

    def __init__(self, engine: FaceEngine) -> None:
        self.engine = engine

    @classmethod
    def at(cls, home: Path | str, backend: str = "onnx") -> DeepFaceVerifier:
        return cls(FaceEngine(home, backend=backend))  # type: ignore[arg-type]

    def warm(self) -> DeepFaceVerifier:
        self.engine.warm()
        return self

    @property
    def model(self) -> str:
        return self.engine.model

    @property
    def model_version(self) -> str:
        return self.engine.model_version

    @property
    def threshold(self) -> float:
        return self.engine.threshold

    # ------------------------------------------------------------ FaceAnalyzer
    def analyse(self, image: bytes, mirrored: bool = False) -> FrameAnalysis:
        """Raises ml.images.ImageRejected (a DomainError) for a photo it will not read."""
        a = self.engine.analyse(image, mirrored=mirrored)
        if a.failure in ("no_face", "several_faces") or not a.faces:
            return FrameAnalysis(a.failure or "no_face")
        face = a.faces[0]
        embedding = b"" if face.embedding is None else face.embedding.astype(np.float32).tobytes()
        return FrameAnalysis(a.failure, face.yaw, face.mouth, embedding)

    def distance(self, a: bytes, b: bytes) -> float:
        return cosine_distance(_as_vector(a), _as_vector(b))

    # ------------------------------------------------------------ enrolment
    def embed_front(self, image: bytes, mirrored: bool = False) -> tuple[bytes, Analysis]:
        """The template of a usable frontal frame: (float32 embedding bytes,
        the analysis with pose and quality). Raises NoFace, SeveralFaces or
        FrameRefused; the pose (is it frontal?) is the caller's rule."""
        a = self.engine.analyse(image, mirrored=mirrored)
        self._raise_unusable(a)
        return a.face.embedding.astype(np.float32).tobytes(), a  # type: ignore[union-attr]

    @staticmethod
    def _raise_unusable(a: Analysis) -> None:
        if a.failure == "no_face":
            raise NoFace(MESSAGES["no_face"])
        if a.failure == "several_faces":
            raise SeveralFaces(MESSAGES["several_faces"], faces=len(a.faces))
        if a.failure:
            raise FrameRefused(a.failure.upper(), MESSAGES.get(a.failure, a.failure))

    # ------------------------------------------------------------ FaceVerifier
    def verify(self, template: bytes, image: bytes) -> FaceVerdict:
        """Compare a fresh photo with an enrolled template. NoFace /
        SeveralFaces for a photo without exactly one person; a frame that is
        too small, dark or blurred (or a spoof, when anti-spoofing runs) is a
        refused verdict with that reason (TOO_DARK, ...), never a match."""
        reference = _as_vector(template)
        a = self.engine.analyse(image)
        if a.failure in ("no_face", "several_faces"):
            self._raise_unusable(a)
        if a.failure:
            return FaceVerdict(False, a.failure.upper(), model=self.model, model_version=self.model_version)
        d, t = cosine_distance(reference, a.face.embedding), self.threshold  # type: ignore[arg-type]
        return FaceVerdict(d <= t, "OK" if d <= t else "FACE_MISMATCH", d, t, confidence(d, t),
                           self.model, self.model_version)
