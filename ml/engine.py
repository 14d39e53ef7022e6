"""The face engine: detection, quality, pose measures and the 512-d embedding.

    engine = FaceEngine(home)          # home: DEEPFACE_HOME (`attendwise ml provision` wrote it)
    engine.warm()                      # once per worker: 3-5 s (TensorFlow, MTCNN, the model)
    analysis = engine.analyse(photo)   # bytes (JPEG/PNG/WebP) or a decoded image

What a frame goes through:

1. `ml.images.decode`: size limits, EXIF orientation, bomb refusal, longer
   side <= 800 px.
2. Detection: deepface's `mtcnn` detector (the `mtcnn` package, which ships
   its weights), run on a copy whose longer side is at most `DETECT_SIDE`
   (400 px): MTCNN's pyramid cost grows with the image (~95 ms at 800 px,
   ~40 ms at 400), and at 400 px it still finds faces down to ~40 px of the
   800-px image (a check-in selfie's face is 150-400 px). When it finds no
   face there it looks again at full size (its scores move a little with
   scale: one photo of ../shared/faces scores 0.89 at 400 px, 0.99 at 800).
   Its three networks run as `tf.function`s (half the time of eager calls).
   Five keypoints per face: eyes, nose, mouth corners.
3. Counting: detections under `MIN_CONFIDENCE` are dropped; a face narrower
   than `PRESENCE_RATIO` of the largest one is a passer-by in the background
   and is not counted. No counted face: `no_face`; more than one:
   `several_faces` (a check-in or enrolment frame holds one person).
4. Quality of the face (on the 800-px image): `too_small` (box narrower than
   `MIN_FACE_PX`), `too_dark` (mean luminance of the box under
   `MIN_BRIGHTNESS`), `blurred` (variance of the Laplacian of the box, scaled
   to 160 px wide, under `MIN_SHARPNESS`). Set on ../shared/faces: its
   photos have faces of 82-365 px, brightness 98-187, sharpness 27-693 (all
   pass). Darkened to 30% (brightness 29-53) their embeddings move 0.07-0.25
   from the original's, to 20% (19-36) up to 0.36, near the 0.40 threshold:
   45 refuses the second. Blurred with a Gaussian of sigma 1.5% of the face
   width (sharpness 5-12) they move <= 0.11; at 2.5% (sharpness 3-6) up to
   0.28: 8 refuses the second. tests/ml/test_faces.py keeps both sides.
5. Embedding: deepface's alignment (`deepface.modules.detection.extract_face`:
   the face region with a margin, rotated so the eyes are level, cropped),
   deepface's preprocessing (BGR / 255, letterboxed to 160x160), then
   Facenet512 with the weights `ml.provision` converted from FaceNet
   20180408-102900. Two interchangeable engines compute it: `onnx`
   (onnxruntime, the default, fastest) and `tf` (deepface's own Keras model,
   called through a `tf.function` instead of deepface's eager call).
   Their embeddings agree to cosine > 0.9999, so templates are shared.
6. Anti-spoofing: deepface's FasNet runs when its weight files are present in
   the weights folder (`2.7_80x80_MiniFASNetV2` and `4_0_0_80x80_MiniFASNetV1SE`,
   `.onnx`; deepface downloads them, which this deployment cannot). Without
   them (the default here) NOTHING detects a photo of a photo, a screen or a
   replayed video: liveness rests on the enrolment's random challenges alone
   (a video of the member turning and smiling, replayed or cut to order,
   passes them), and a check-in photo is only compared with the template (a
   printed photo of the member passes it). `engine.anti_spoofing` says which.

Templates are bound to `MODEL` and `MODEL_VERSION`: the version names the
source weights, the converter version and this pipeline's version, so an
embedding made another way is never compared with one made here.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from ml._tf import tf as _tf
from ml.images import DecodedImage, decode
from ml.provision import CONVERTER_VERSION, ONNX_FILE, SOURCE_MODEL, verified_manifest, weights_dir

MODEL = "Facenet512-casia-20180408"
PIPELINE_VERSION = "1"  # detection, alignment and preprocessing; bump when any changes what an embedding means
MODEL_VERSION = f"{SOURCE_MODEL}.conv{CONVERTER_VERSION}.pipe{PIPELINE_VERSION}"

# Cosine distance at or below which two faces are one person. deepface's
# default for Facenet512 (0.30) is for its own weights (VGGFace2): with these
# (CASIA-WebFace) it rejects 15 of the 140 same-person pairs of
# ../shared/faces/pairs.csv. Calibrated there (140 same, 140 different pairs)
# by `python -m bench.faces`, which recomputes it: same-person distances reach
# 0.35, plus one borderline pair (img3/img12) at 0.36-0.41 depending on how
# the JPEG is scaled; different people start at 0.454 (0.54 on deepface's
# master.csv, 262 different pairs). Every threshold in 0.406..0.454 is right
# on all 280 pairs; 0.40 keeps to the strict side of that range (99.6%, the
# borderline pair refused) because a false reject is a retry or a host's
# override, a false accept is someone else checked in.
THRESHOLD = 0.40

DETECT_SIDE = 400  # longer side of the copy MTCNN runs on
MIN_CONFIDENCE = 0.90  # MTCNN score below which a detection is ignored
PRESENCE_RATIO = 1 / 3  # a face narrower than this share of the largest face is background
MIN_FACE_PX = 64  # face box width on the decoded (<= 800 px) image
MIN_BRIGHTNESS = 45.0  # mean luminance (0-255) of the face box
MIN_SHARPNESS = 8.0  # variance of the Laplacian of the face box, scaled to 160 px wide
INPUT_SIZE = 160
YAW_DEGREES_PER_UNIT = 14 / 0.17  # a rough reading of the ratio, for humans only

Backend = Literal["onnx", "tf"]
KEYPOINTS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
SPOOF_FILES = ("2.7_80x80_MiniFASNetV2.onnx", "4_0_0_80x80_MiniFASNetV1SE.onnx")


# ------------------------------------------------------------------ measures
def _point(p: Any) -> np.ndarray:
    return np.asarray(p, dtype=np.float64)


def yaw_ratio(keypoints: Mapping[str, Any], mirrored: bool = False) -> float:
    """Head turn, as the nose's offset from the eyes' midpoint along the eye
    line, over the distance between the eyes, after removing roll (the offset
    is measured along the line through the eyes, so a tilted head reads as
    straight). 0 is frontal; |0.17| is about 14 degrees (`YAW_DEGREES_PER_UNIT`).

    Sign: > 0 when the person turns to their own left, < 0 to their right
    (the convention of `domain.enrolment.FrameMeasures`). Keypoints are named
    as seen in the image (MTCNN's naming: `left_eye` is the eye on the image's
    left). In an unmirrored photo (a rear camera, or a front camera that
    stores the true image) the person's left is the image's right, so a turn
    to their left moves the nose to the image's right. A front camera's
    preview is mirrored: pass `mirrored=True` for such frames and the sign is
    flipped, so it still means the person's own left.

    Precision: MTCNN's nose point is noisy; a frame and its mirror image
    disagree by 0.03 (standard deviation) on the photos of ../shared/faces,
    so a pose within ~0.05 of a rule's limit may pass on one frame and not
    the next.
    """
    left, right, nose = _point(keypoints["left_eye"]), _point(keypoints["right_eye"]), _point(keypoints["nose"])
    across = right - left  # image-left eye -> image-right eye
    span = float(np.hypot(*across))
    if span < 1e-6:
        return 0.0
    offset = float(np.dot(nose - (left + right) / 2, across / span)) / span
    return -offset if mirrored else offset


def mouth_ratio(keypoints: Mapping[str, Any]) -> float:
    """Mouth width (between its corners) over the distance between the eyes;
    it grows with a smile (the enrolment's smile challenge compares it with
    the front frame's)."""
    eyes = float(np.hypot(*(_point(keypoints["right_eye"]) - _point(keypoints["left_eye"]))))
    if eyes < 1e-6:
        return 0.0
    return float(np.hypot(*(_point(keypoints["mouth_right"]) - _point(keypoints["mouth_left"])))) / eyes


# ------------------------------------------------------------------ results
@dataclass(frozen=True)
class Quality:
    face_px: int  # box width on the decoded image
    brightness: float  # mean luminance of the box, 0-255
    sharpness: float  # variance of the Laplacian, box scaled to 160 px wide
    problem: str | None  # "too_small", "too_dark", "blurred" or None


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # x, y, w, h on the decoded image
    confidence: float
    keypoints: dict[str, tuple[float, float]]  # named as seen in the image (see yaw_ratio)
    quality: Quality
    yaw: float  # yaw_ratio, with the frame's `mirrored` applied
    mouth: float  # mouth_ratio
    embedding: np.ndarray | None = None  # float32 (512,), unnormalised, as deepface gives it
    is_real: bool | None = None  # anti-spoofing verdict; None when it did not run


@dataclass(frozen=True)
class Analysis:
    faces: list[Face]  # counted faces, largest first
    size: tuple[int, int]  # decoded width, height
    failure: str | None  # None, "no_face", "several_faces", "too_small", "too_dark", "blurred", "spoof"
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def face(self) -> Face:
        """The one face of a usable frame."""
        if self.failure or len(self.faces) != 1:
            raise ValueError(f"no single usable face: {self.failure}")
        return self.faces[0]


# ------------------------------------------------------------------ the engine
class FaceEngine:
    """Build once per worker process, `warm()` at start, then `analyse()`
    from any thread (TensorFlow and onnxruntime calls are thread-safe; on a
    2-core machine concurrent calls share the cores)."""

    model = MODEL
    model_version = MODEL_VERSION
    threshold = THRESHOLD

    def __init__(self, home: Path | str, backend: Backend = "onnx", check_hashes: bool = True) -> None:
        if backend not in ("onnx", "tf"):
            raise ValueError(f"unknown backend {backend!r}: 'onnx' or 'tf'")
        self.home = Path(home).resolve()
        self.backend = backend
        self.check_hashes = check_hashes
        self._lock = threading.Lock()
        self._ready = False
        self._detector: Any = None
        self._embed_fn: Any = None
        self._spoof: Any = None
        self.manifest: dict[str, Any] = {}

    # -------------------------------------------------------------- warm-up
    @property
    def anti_spoofing(self) -> bool:
        self.warm()
        return self._spoof is not None

    def warm(self) -> FaceEngine:
        """Load everything and run one frame through it (3-5 s, once)."""
        if self._ready:
            return self
        with self._lock:
            if self._ready:
                return self
            # raises ModelNotProvisioned (with the command to run) before deepface could try a download
            self.manifest = verified_manifest(self.home, check_hashes=self.check_hashes)
            os.environ["DEEPFACE_HOME"] = str(self.home)  # where deepface's loaders look
            tf = _tf()
            self._detector = self._build_detector(tf)
            self._embed_fn = self._build_onnx() if self.backend == "onnx" else self._build_tf(tf)
            self._spoof = self._build_spoof()
            self._run_warmup()
            self._ready = True
        return self

    def _build_detector(self, tf: Any) -> Any:
        from deepface.models.face_detection.MtCnn import MtCnnClient

        detector = MtCnnClient().model  # deepface's mtcnn detector: the mtcnn package's MTCNN
        for stage in getattr(detector, "stages", []):
            net = getattr(stage, "_model", None)
            if net is not None:  # graph mode instead of eager calls; shapes vary, so relax retracing
                stage._model = tf.function(net, reduce_retracing=True)  # noqa: SLF001
        return detector

    def _build_onnx(self) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(weights_dir(self.home) / ONNX_FILE), sess_options=options,
                                       providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def embed(batch: np.ndarray) -> np.ndarray:
            return session.run(None, {name: batch})[0]

        return embed

    def _build_tf(self, tf: Any) -> Any:
        from deepface.models.facial_recognition.tf.Facenet import FaceNet512dClient

        model = FaceNet512dClient().model  # deepface's Facenet512, loading facenet512_weights.h5 from DEEPFACE_HOME
        call = tf.function(lambda x: model(x, training=False),
                           input_signature=[tf.TensorSpec((None, INPUT_SIZE, INPUT_SIZE, 3), tf.float32)])

        def embed(batch: np.ndarray) -> np.ndarray:
            return call(tf.constant(batch)).numpy()

        return embed

    def _build_spoof(self) -> Any:
        folder = weights_dir(self.home)
        if not all((folder / name).is_file() for name in SPOOF_FILES):
            return None
        try:
            from deepface.models.spoofing.onnx.FasNet import Fasnet

            return Fasnet()  # finds its files in DEEPFACE_HOME, downloads nothing
        except Exception:  # noqa: BLE001 - unreadable weights: treated as absent, said by anti_spoofing
            return None

    def _run_warmup(self) -> None:
        canvas = np.full((480, 640, 3), 128, np.uint8)
        cv2.circle(canvas, (320, 240), 120, (150, 170, 200), -1)
        self._detect(canvas)  # traces the detector's functions
        self._embed_fn(np.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), np.float32))

    # -------------------------------------------------------------- steps
    def _detect(self, bgr: np.ndarray, side: int | None = DETECT_SIDE
                ) -> list[tuple[np.ndarray, float, dict[str, tuple[float, float]]]]:
        """(box x1,y1,x2,y2 on `bgr`, confidence, keypoints) per detection, run
        on a copy whose longer side is at most `side` (None: `bgr` itself)."""
        h, w = bgr.shape[:2]
        factor = 1.0 if side is None else min(1.0, side / max(h, w))
        small = bgr if factor == 1.0 else cv2.resize(bgr, (round(w * factor), round(h * factor)),
                                                     interpolation=cv2.INTER_AREA)
        rgb = np.ascontiguousarray(small[:, :, ::-1])
        rows = self._detector.detect_faces(rgb, box_format="xyxy", output_type="numpy")
        out = []
        # a row: image id, x1, y1, x2, y2, confidence, the five keypoints' x, then their y
        # (mtcnn.utils.landmarks.parse_landmarks reads it so), in KEYPOINTS order
        for r in np.asarray(rows, dtype=np.float64).reshape(-1, 16):
            box = r[1:5] / factor
            kp = {name: (float(r[6 + i] / factor), float(r[11 + i] / factor)) for i, name in enumerate(KEYPOINTS)}
            out.append((box, float(r[5]), kp))
        return out

    @staticmethod
    def _quality(bgr: np.ndarray, box: tuple[int, int, int, int]) -> Quality:
        x, y, w, h = box
        region = bgr[max(0, y):y + h, max(0, x):x + w]
        if region.size == 0:
            return Quality(w, 0.0, 0.0, "too_small")
        gray = cv2.cvtColor(region, cv2.COLOR_BGR2GRAY)
        brightness = float(gray.mean())
        scaled = cv2.resize(gray, (INPUT_SIZE, max(1, round(gray.shape[0] * INPUT_SIZE / gray.shape[1]))),
                            interpolation=cv2.INTER_AREA if gray.shape[1] > INPUT_SIZE else cv2.INTER_LINEAR)
        sharpness = float(cv2.Laplacian(scaled, cv2.CV_64F).var())
        problem = ("too_small" if w < MIN_FACE_PX else "too_dark" if brightness < MIN_BRIGHTNESS
                   else "blurred" if sharpness < MIN_SHARPNESS else None)
        return Quality(w, brightness, sharpness, problem)

    @staticmethod
    def aligned_input(bgr: np.ndarray, box: tuple[int, int, int, int], keypoints: Mapping[str, Any]) -> np.ndarray:
        """The model's input for one face, made as deepface makes it: the
        aligned crop (deepface's extract_face, eyes levelled), BGR / 255,
        letterboxed to 160x160. Shape (1, 160, 160, 3), float32."""
        from deepface.models.Detector import FacialAreaRegion
        from deepface.modules.detection import extract_face
        from deepface.modules.preprocessing import resize_image

        def ipt(p: Any) -> tuple[int, int]:
            return int(p[0]), int(p[1])

        x, y, w, h = box
        region = FacialAreaRegion(
            x=x, y=y, w=w, h=h, confidence=None,
            # deepface's eyes are the person's: its mtcnn client swaps MTCNN's image-side names
            left_eye=ipt(keypoints["right_eye"]), right_eye=ipt(keypoints["left_eye"]),
            nose=ipt(keypoints["nose"]), mouth_left=ipt(keypoints["mouth_right"]),
            mouth_right=ipt(keypoints["mouth_left"]))
        # deepface pads the whole image by half its size first; extract_face pads the face's own
        # margin with the same black, so the crop is the same without copying the image
        face = extract_face(facial_area=region, img=bgr, align=True, expand_percentage=0,
                            width_border=0, height_border=0, detector_backend="mtcnn").img
        if face.size == 0:
            raise ValueError("empty face crop")
        face = face.astype(np.float32) / 255.0
        return resize_image(face, (INPUT_SIZE, INPUT_SIZE)).astype(np.float32)

    def embed_inputs(self, batch: np.ndarray) -> np.ndarray:
        """Facenet512 on prepared inputs (n, 160, 160, 3) -> (n, 512) float32."""
        self.warm()
        return np.asarray(self._embed_fn(np.ascontiguousarray(batch, dtype=np.float32)), dtype=np.float32)

    # -------------------------------------------------------------- analysis
    def analyse(self, image: bytes | DecodedImage | np.ndarray, mirrored: bool = False,
                embed: Literal["one", "all", "none"] = "one") -> Analysis:
        """Detect, count, check and measure the faces of one frame; embed the
        face of a usable frame (`embed="all"`: every counted face, even when
        the frame is refused; `"none"`: no embedding). Raises
        `ml.images.ImageRejected` for a photo it will not read."""
        self.warm()
        t0 = time.perf_counter()
        if isinstance(image, (bytes, bytearray, memoryview)):
            bgr = decode(bytes(image)).bgr
        elif isinstance(image, DecodedImage):
            bgr = image.bgr
        else:
            bgr = np.ascontiguousarray(image, dtype=np.uint8)
        t1 = time.perf_counter()
        height, width = bgr.shape[:2]

        found = [d for d in self._detect(bgr) if d[1] >= MIN_CONFIDENCE]
        if not found and max(height, width) > DETECT_SIDE:
            # MTCNN's scores move a little with scale: a face it is unsure of at 400 px gets a second
            # look at full size (a frame without a face costs one more detection, ~90 ms)
            found = [d for d in self._detect(bgr, None) if d[1] >= MIN_CONFIDENCE]
        found.sort(key=lambda d: (d[0][2] - d[0][0]) * (d[0][3] - d[0][1]), reverse=True)
        if found:
            largest = found[0][0][2] - found[0][0][0]
            found = [d for d in found if d[0][2] - d[0][0] >= PRESENCE_RATIO * largest]
        t2 = time.perf_counter()

        faces: list[dict[str, Any]] = []
        for box_f, conf, kp in found:
            x1, y1 = max(0, math.floor(box_f[0])), max(0, math.floor(box_f[1]))
            x2, y2 = min(width, math.ceil(box_f[2])), min(height, math.ceil(box_f[3]))
            box = (x1, y1, max(0, x2 - x1), max(0, y2 - y1))
            faces.append({"box": box, "confidence": conf, "keypoints": kp, "quality": self._quality(bgr, box),
                          "yaw": yaw_ratio(kp, mirrored), "mouth": mouth_ratio(kp)})

        failure: str | None = None
        if not faces:
            failure = "no_face"
        elif len(faces) > 1:
            failure = "several_faces"
        elif faces[0]["quality"].problem:
            failure = faces[0]["quality"].problem

        if self._spoof is not None and failure is None:
            is_real, _score = self._spoof.analyze(img=bgr, facial_area=faces[0]["box"])
            faces[0]["is_real"] = bool(is_real)
            if not is_real:
                failure = "spoof"
        t3 = time.perf_counter()

        chosen = faces if embed == "all" else faces[:1] if (embed == "one" and failure is None) else []
        if chosen:
            batch = np.concatenate([self.aligned_input(bgr, f["box"], f["keypoints"]) for f in chosen])
            for f, vector in zip(chosen, self.embed_inputs(batch), strict=True):
                f["embedding"] = vector
        t4 = time.perf_counter()
        timings = {"decode": (t1 - t0) * 1000, "detect": (t2 - t1) * 1000, "checks": (t3 - t2) * 1000,
                   "embed": (t4 - t3) * 1000}
        return Analysis([Face(**f) for f in faces], (width, height), failure, timings)
