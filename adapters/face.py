"""Face verification: the port the check-in flow calls, and where enrolled
templates come from.

`FaceVerifier.verify(template, image)` compares a fresh photo with a member's
enrolled template and returns a `FaceVerdict` (match or not, with distance,
threshold, confidence, model name and version), or raises `NoFace` /
`SeveralFaces` for a photo it cannot use, or `VerifierUnavailable` when it
cannot answer now (the attempt then waits as pending; it is never accepted
without an answer).

Until a model is installed (the face-verification issue), `NoModelVerifier`
refuses every face with reason `NO_MODEL`: the flow stays honest, never open.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from adapters.errors import ServiceUnavailable
from domain.errors import DomainError


@dataclass(frozen=True)
class FaceVerdict:
    match: bool
    reason: str  # "OK", or why not: "FACE_MISMATCH", "NO_MODEL", ...
    distance: float | None = None
    threshold: float | None = None
    confidence: float | None = None
    model: str | None = None
    model_version: str | None = None


class NoFace(DomainError):
    code = "NO_FACE"
    status = 422


class SeveralFaces(DomainError):
    code = "SEVERAL_FACES"
    status = 422


class VerifierUnavailable(ServiceUnavailable):
    """The face model cannot answer now (no worker, overloaded, timed out)."""


@dataclass(frozen=True)
class FrameAnalysis:
    """One frame, as the face model sees it. `failure` is a reason code when
    the frame cannot be used (no_face, several_faces, too_small, too_dark,
    blurred); otherwise the one face's measures and embedding."""

    failure: str | None
    yaw: float = 0.0
    mouth: float = 0.0
    embedding: bytes = b""


class FaceAnalyzer(Protocol):
    """The face model behind enrolment and verification (in process, or
    workers behind NATS request/reply). Raises VerifierUnavailable when it
    cannot answer in time."""

    model: str
    model_version: str
    threshold: float  # cosine distance at or below which two faces are one person

    def analyse(self, image: bytes, mirrored: bool = False) -> FrameAnalysis: ...

    def distance(self, a: bytes, b: bytes) -> float: ...


class FaceVerifier(Protocol):
    def verify(self, template: bytes, image: bytes) -> FaceVerdict: ...


class FaceTemplates(Protocol):
    def template(self, user_id: str) -> bytes | None:
        """The member's enrolled face template, or None if not enrolled."""


class NoModelVerifier:
    """Refuses every face: no model is installed."""

    def verify(self, template: bytes, image: bytes) -> FaceVerdict:
        return FaceVerdict(match=False, reason="NO_MODEL", model=None)


class NoEnrolments:
    """Nobody is enrolled until enrolment exists."""

    def template(self, user_id: str) -> bytes | None:
        return None


def cosine_distance(a: np.ndarray | bytes, b: np.ndarray | bytes) -> float:
    """1 - cosine similarity: 0 for the same direction, up to 2. Accepts
    embeddings as arrays or as float32 bytes (templates)."""
    x = np.frombuffer(a, dtype=np.float32) if isinstance(a, (bytes, bytearray, memoryview)) else np.asarray(a)
    y = np.frombuffer(b, dtype=np.float32) if isinstance(b, (bytes, bytearray, memoryview)) else np.asarray(b)
    if x.shape != y.shape:
        raise ValueError(f"embeddings of different sizes: {x.shape} and {y.shape}")
    x, y = x.astype(np.float64), y.astype(np.float64)
    return float(1.0 - x @ y / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-12))


def confidence(distance: float, threshold: float, spread: float = 0.05) -> float:
    """How sure a verdict is, 0..1: 0.5 at the threshold, towards 1 as the
    distance falls below it (a logistic curve, `spread` wide)."""
    import math

    return 1.0 / (1.0 + math.exp((distance - threshold) / spread))


class AnalyzerVerifier:
    """Check-in verification on a `FaceAnalyzer`: the photo must show one
    usable face, compared with the template by cosine distance."""

    def __init__(self, analyzer: FaceAnalyzer) -> None:
        self.analyzer = analyzer

    def verify(self, template: bytes, image: bytes) -> FaceVerdict:
        a = self.analyzer
        frame = a.analyse(image)
        if frame.failure == "no_face":
            raise NoFace("no face was found in the photo")
        if frame.failure == "several_faces":
            raise SeveralFaces("the photo shows several faces; one person at a time")
        if frame.failure:
            return FaceVerdict(False, frame.failure.upper(), model=a.model, model_version=a.model_version)
        d, t = a.distance(template, frame.embedding), a.threshold
        return FaceVerdict(d <= t, "OK" if d <= t else "FACE_MISMATCH", d, t, confidence(d, t), a.model,
                           a.model_version)
