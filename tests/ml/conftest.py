"""Fixtures of the face-model tests: the labelled photos of ../shared/faces,
the provisioned weights, and one warmed engine per test session.

The photos are not part of the repository (see ../shared/faces/README.md):
without them these tests are skipped with the path they looked at, or fail
when ATTENDWISE_REQUIRE_SERVICES=1 (the README's test command and CI).
Weights are provisioned (`ml.provision.provision`, idempotent: ~40 s the
first time, a hash check after) into ATTENDWISE_MODEL_DIR, default
.attendwise/models, the folder `attendwise ml provision` writes."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from tests.conftest import REPO, REQUIRE

FACES = REPO.parent / "shared" / "faces"


def need_faces() -> Path:
    if not (FACES / "pairs.csv").is_file():
        msg = (f"the labelled face photos are missing: expected {FACES} with pairs.csv "
               "(shared/faces beside the repository, see its README.md)")
        if REQUIRE:
            pytest.fail(msg)
        pytest.skip(msg)
    return FACES


@pytest.fixture(scope="session")
def faces() -> Path:
    return need_faces()


@pytest.fixture(scope="session")
def pairs(faces: Path) -> list[tuple[str, str, bool]]:
    with open(faces / "pairs.csv", newline="") as f:
        return [(r["file_x"], r["file_y"], r["same"].strip() == "yes") for r in csv.DictReader(f)]


@pytest.fixture(scope="session")
def model_home() -> Path:
    from ml.provision import provision

    home = Path(os.environ.get("ATTENDWISE_MODEL_DIR") or REPO / ".attendwise" / "models")
    provision(home, progress=lambda line: print(f"[provision] {line}"))
    return home


@pytest.fixture(scope="session")
def engine(model_home: Path):  # noqa: ANN201 - ml.engine.FaceEngine, imported lazily
    from ml.engine import FaceEngine

    return FaceEngine(model_home, backend="onnx").warm()


@pytest.fixture(scope="session")
def verifier(engine):  # noqa: ANN001, ANN201
    from ml.verifier import DeepFaceVerifier

    return DeepFaceVerifier(engine)


@pytest.fixture(scope="session")
def photo(faces: Path):  # noqa: ANN201
    """photo("img1.jpg") -> its bytes."""
    def read(name: str) -> bytes:
        return (faces / name).read_bytes()

    return read
