"""TensorFlow, imported the way deepface needs it.

deepface's Keras models are tf-keras (Keras 2) models: with TensorFlow >= 2.16
`TF_USE_LEGACY_KERAS=1` must be set before TensorFlow is first imported, or
`tensorflow.keras` is Keras 3 and deepface's layers do not load. Every module
of `ml` imports TensorFlow through `tf()` so the order is always right.
"""

from __future__ import annotations

import os
from types import ModuleType


def environment() -> None:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # no C++ info lines (CUDA stubs, oneDNN notices)


def tf() -> ModuleType:
    environment()
    import tensorflow

    tensorflow.get_logger().setLevel("ERROR")
    return tensorflow
