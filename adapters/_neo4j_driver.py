"""The Neo4j driver, imported without its optional DataFrame support.

The driver imports numpy, pandas and pyarrow when they are installed (they
are: deepface needs them) for `Result.to_df` and Arrow conversions, which
AttendWise never uses. That cost every process that talks to Neo4j about
40 MB and 0.7 s at start. Its `_optional_deps` module is given here without
them, before the driver is imported (unless something imported the driver
first: then it stays as it was).
"""

from __future__ import annotations

import sys
import types

if "neo4j" not in sys.modules and "neo4j._optional_deps" not in sys.modules:
    _none = types.ModuleType("neo4j._optional_deps")
    _none.np = _none.pd = _none.pa = _none.pa_compute = None  # type: ignore[attr-defined]
    _none.__all__ = ["np", "pa", "pa_compute", "pd"]  # type: ignore[attr-defined]
    sys.modules["neo4j._optional_deps"] = _none

import neo4j  # noqa: E402

__all__ = ["neo4j"]
