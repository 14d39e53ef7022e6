"""What every benchmark shares: one way to print its table, percentiles,
and the CPU time a process has used."""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for r in rows:
        table.add_row(*r)
    Console().print(table)


def percentiles(values: Sequence[float], *qs: int) -> tuple[float, ...]:
    """The `qs` percentiles of `values` (inclusive: within the values measured;
    one value is every percentile of itself, none gives zeros)."""
    if len(values) < 2:
        return tuple(values[0] if values else 0.0 for _ in qs)
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return tuple(cuts[q - 1] for q in qs)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc); 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
