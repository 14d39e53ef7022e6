"""Face-model benchmark: accuracy on the labelled pairs, the threshold they
calibrate, per-frame latency and memory, for each engine (`onnx`, `tf`).

    python -m bench.faces [--engines onnx,tf] [--passes 3] [--home .attendwise/models]

Needs ../shared/faces (65 photos, pairs.csv: 140 same-person and 140
different-people pairs) and provisioned weights (provisioned here if
missing, ~40 s). Each engine runs in its own fresh process, one after the
other, so its resident memory is a worker's and the two do not share cores.

- Accuracy at `ml.engine.THRESHOLD`; the calibrated threshold: the middle
  of the widest range of thresholds with the best accuracy, and where the
  constant stands: inside that range, stricter (below it: the constant is
  kept on the strict side, see ml/engine.py) or LOOSER (above it: fix it);
  TAR at FAR 1% (the share of same-person pairs accepted at the strictest
  threshold that accepts at most 1% of different-people pairs).
- Latency per frame: detection + checks + embedding on an already decoded
  photo (`FaceEngine.analyse`), for the 63 one-face photos, `--passes` times,
  after a warm-up pass. Decoding is a row of its own.
- Memory: resident set of the worker process after warm-up and after the
  run, and its peak.

Baselines, measured in the same run: for accuracy, deepface's default
Facenet512 threshold (0.30, made for other weights) on the same distances;
for the frame, detection alone (MTCNN as the engine runs it); for the
embedding, deepface's own eager Keras call (`FaceNet512dClient.forward`,
in a third process); for decoding, OpenCV's full-size `imdecode` of the same
bytes; for memory, the same process before the model is loaded.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.report import percentiles, print_table

REPO = Path(__file__).resolve().parent.parent
FACES = REPO.parent / "shared" / "faces"
DEEPFACE_THRESHOLD = 0.30  # deepface's default for Facenet512 (cosine), for its own weights


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _provision(home: str) -> str:
    from ml.provision import provision

    return str(provision(Path(home), progress=lambda line: print(f"  [provision] {line}", flush=True)))


def _measure_engine(backend: str, home: str, faces: str, passes: int) -> dict[str, Any]:
    """Runs in a fresh process: one engine, from cold."""
    import cv2
    import numpy as np

    from ml.engine import FaceEngine
    from ml.images import decode

    out: dict[str, Any] = {"rss_before": _rss_mb()}
    started = time.perf_counter()
    engine = FaceEngine(Path(home), backend=backend).warm()  # type: ignore[arg-type]
    out["warm_s"] = time.perf_counter() - started
    out["rss_warm"] = _rss_mb()

    folder = Path(faces)
    with open(folder / "pairs.csv", newline="") as f:
        pairs = [(r["file_x"], r["file_y"], r["same"].strip() == "yes") for r in csv.DictReader(f)]
    names = sorted(p.name for p in folder.glob("*.jpg"))
    raw = {n: (folder / n).read_bytes() for n in names}

    decode_ms, imdecode_ms = [], []
    decoded = {}
    for n in names:
        t = time.perf_counter()
        decoded[n] = decode(raw[n])
        decode_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        cv2.imdecode(np.frombuffer(raw[n], np.uint8), cv2.IMREAD_COLOR)
        imdecode_ms.append((time.perf_counter() - t) * 1000)

    embeddings = {}
    for n in names:
        a = engine.analyse(decoded[n])
        if a.failure is None:
            embeddings[n] = a.face.embedding
    out["distances"] = [(float(1 - np.dot(embeddings[x], embeddings[y])
                               / (np.linalg.norm(embeddings[x]) * np.linalg.norm(embeddings[y]))), same)
                        if x in embeddings and y in embeddings else (None, same) for x, y, same in pairs]

    single = [n for n in names if n in embeddings]
    frame_ms, detect_ms, embed_ms = [], [], []
    inputs = {}
    for n in single:
        f = engine.analyse(decoded[n], embed="none").face
        inputs[n] = engine.aligned_input(decoded[n].bgr, f.box, f.keypoints)
    for _ in range(passes):
        for n in single:
            t = time.perf_counter()
            a = engine.analyse(decoded[n])
            frame_ms.append((time.perf_counter() - t) * 1000)
            assert a.failure is None
            t = time.perf_counter()
            engine._detect(decoded[n].bgr)  # noqa: SLF001 - the detector as analyse runs it
            detect_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            engine.embed_inputs(inputs[n])
            embed_ms.append((time.perf_counter() - t) * 1000)
    out.update(frame_ms=frame_ms, detect_ms=detect_ms, embed_ms=embed_ms, decode_ms=decode_ms,
               imdecode_ms=imdecode_ms, frames=len(single), rss_after=_rss_mb(), rss_peak=_peak_mb())
    return out


def _measure_deepface_eager(home: str, passes: int, frames: int) -> dict[str, Any]:
    """deepface's own Facenet512 call, as it ships: an eager Keras call per image."""
    import numpy as np

    os.environ["DEEPFACE_HOME"] = str(Path(home).resolve())
    from ml._tf import tf

    tf()
    from deepface.models.facial_recognition.tf.Facenet import FaceNet512dClient

    client = FaceNet512dClient()
    rng = np.random.default_rng(1)
    batch = rng.random((1, 160, 160, 3), dtype=np.float32)
    client.forward(batch)
    times = []
    for _ in range(max(20, passes * frames // 3)):
        t = time.perf_counter()
        client.forward(batch)
        times.append((time.perf_counter() - t) * 1000)
    return {"embed_ms": times, "rss": _rss_mb()}


def _accuracy(distances: list[tuple[float | None, bool]], threshold: float) -> tuple[float, int, int]:
    right = sum(1 for d, same in distances if d is not None and (d <= threshold) == same)
    return right / len(distances), right, len(distances)


def calibrate(distances: list[tuple[float | None, bool]]) -> tuple[float, float, float, float]:
    """(best accuracy, low, high, middle): the widest range of thresholds
    that reaches the best accuracy, and its middle (the calibrated threshold)."""
    known = sorted(d for d, _ in distances if d is not None)
    cuts = [known[0] - 0.05] + [(a + b) / 2 for a, b in zip(known, known[1:], strict=False)] + [known[-1] + 0.05]
    best, best_range = -1.0, (0.0, 0.0)
    for i, cut in enumerate(cuts):
        acc = _accuracy(distances, cut)[0]
        lo = known[i - 1] if i > 0 else cut
        hi = known[i] if i < len(known) else cut
        if acc > best + 1e-12 or (abs(acc - best) <= 1e-12 and hi - lo > best_range[1] - best_range[0]):
            best, best_range = acc, (lo, hi)
    lo, hi = best_range
    return best, lo, hi, (lo + hi) / 2


def tar_at_far(distances: list[tuple[float | None, bool]], far: float = 0.01) -> tuple[float, float]:
    """(TAR, threshold) at the strictest threshold accepting at most `far`
    of the different-people pairs (a missing face counts as rejected)."""
    different = sorted(d for d, same in distances if not same and d is not None)
    n_diff = sum(1 for _, same in distances if not same)
    allowed = int(far * n_diff)
    threshold = different[allowed] - 1e-9 if allowed < len(different) else float("inf")
    same = [d for d, s in distances if s]
    return sum(1 for d in same if d is not None and d <= threshold) / len(same), threshold


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.faces")
    parser.add_argument("--engines", default="onnx,tf", help="comma-separated: onnx, tf")
    parser.add_argument("--passes", type=int, default=3, help="timed passes over the one-face photos")
    parser.add_argument("--home", default=os.environ.get("ATTENDWISE_MODEL_DIR", ".attendwise/models"),
                        help="DEEPFACE_HOME holding the provisioned weights")
    parser.add_argument("--faces", default=str(FACES), help="the labelled photos (pairs.csv)")
    args = parser.parse_args()
    if not (Path(args.faces) / "pairs.csv").is_file():
        raise SystemExit(f"no labelled face photos at {args.faces} (shared/faces beside the repository)")
    from ml.engine import THRESHOLD

    spawn = multiprocessing.get_context("spawn")

    def isolated(fn: Any, *fn_args: Any) -> Any:
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            return pool.submit(fn, *fn_args).result()

    print(isolated(_provision, args.home), flush=True)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    results = {}
    for name in engines:
        print(f"measuring the {name} engine ...", flush=True)
        results[name] = isolated(_measure_engine, name, args.home, args.faces, args.passes)
    frames = next(iter(results.values()))["frames"]
    print("measuring deepface's eager call ...", flush=True)
    eager = isolated(_measure_deepface_eager, args.home, args.passes, frames)
    e50, e95 = percentiles(eager["embed_ms"], 50, 95)

    rows: list[tuple[str, str, str, str, str]] = []
    first = results[engines[0]]
    d50, d95 = percentiles(first["decode_ms"], 50, 95)
    i50, i95 = percentiles(first["imdecode_ms"], 50, 95)
    rows.append((f"decode to <= 800 px, {len(first['decode_ms'])} photos (p50/p95 ms)", f"{d50:.1f} / {d95:.1f}",
                 f"{i50:.1f} / {i95:.1f} cv2.imdecode, full size", f"{d50 / i50:.2f}x", ""))
    for name in engines:
        r = results[name]
        dist = r["distances"]
        acc, right, total = _accuracy(dist, THRESHOLD)
        base_acc, base_right, _ = _accuracy(dist, DEEPFACE_THRESHOLD)
        best, lo, hi, mid = calibrate(dist)
        tar, tar_t = tar_at_far(dist)
        same = [d for d, s in dist if s and d is not None]
        diff = [d for d, s in dist if not s and d is not None]
        f50, f95 = percentiles(r["frame_ms"], 50, 95)
        x50, x95 = percentiles(r["detect_ms"], 50, 95)
        m50, m95 = percentiles(r["embed_ms"], 50, 95)
        rows += [
            (f"{name}: accuracy at {THRESHOLD:.2f}, {total} pairs", f"{acc:.1%} ({right}/{total})",
             f"{base_acc:.1%} at deepface's 0.30", "", ">= 99%"),
            (f"{name}: calibrated threshold", f"{mid:.3f} ({best:.0%} in {lo:.3f}..{hi:.3f})",
             f"same max {max(same):.3f}, different min {min(diff):.3f}", "",
             f"{THRESHOLD}: {'inside' if lo <= THRESHOLD <= hi else 'stricter' if THRESHOLD < lo else 'LOOSER'}"),
            (f"{name}: TAR at FAR 1%", f"{tar:.1%} (t {tar_t:.3f})", "", "", ""),
            (f"{name}: detect + embed, {len(r['frame_ms'])} frames (p50/p95 ms)", f"{f50:.0f} / {f95:.0f}",
             f"{x50:.0f} / {x95:.0f} detection alone", f"{f50 / x50:.1f}x", "p50 <= 150"),
            (f"{name}: embedding alone (p50/p95 ms)", f"{m50:.0f} / {m95:.0f}",
             f"{e50:.0f} / {e95:.0f} deepface eager", f"{m50 / e50:.2f}x", ""),
            (f"{name}: worker RSS MB, warm/run/peak", f"{r['rss_warm']:,.0f} / {r['rss_after']:,.0f} / "
             f"{r['rss_peak']:,.0f}", f"{r['rss_before']:,.0f} before loading", "", ""),
            (f"{name}: warm-up (s)", f"{r['warm_s']:.1f}", "", "", "once per worker"),
        ]
    print_table(f"Face model: {MODEL_NAME()} on {os.cpu_count()} cores", ("measure", "value",
                "baseline (same run)", "ratio", "target"), rows)


def MODEL_NAME() -> str:  # noqa: N802 - read late, after the argument parsing
    from ml.engine import MODEL, MODEL_VERSION

    return f"{MODEL} {MODEL_VERSION}"


if __name__ == "__main__":
    main()
