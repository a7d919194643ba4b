"""How many rows the Pandera engine reads at a time, and the memory guard for it.

`check_chunk_size` refuses a chunk size whose estimated peak would exceed the limit,
before anything is read, saying how much it would need. The estimate is measured, not
guessed: the bytes per row of a typed `results` chunk (the widest table, with the columns
the engine reads and the dtypes the contracts pin) built here from synthetic rows, times
the read amplification while a chunk is being built (`READ_AMPLIFICATION`).

pd.read_sql peaks at about 10 times its final frame (every row of the chunk passes
through Python tuples at once; PITFALLS). The engine's reader
(`checks.pandera_engine.read_frame`) keeps only one fetch batch of tuples alive (a
server-side cursor on PostgreSQL) and converts it column by column into typed arrays.
Measured on a 500,000-result database with 200,000-row chunks (frame: 42 MB, 219 bytes
a row): tracemalloc peak 1.8 times the frame; resident memory grew by 136 MB on SQLite
and 134 MB on PostgreSQL over the process's baseline, about 3.2 times the frame. The
guard takes 4 times (167 MB at the default chunk size), and a test reads and validates a
chunk under tracemalloc and asserts the estimate covers the peak.
"""

from __future__ import annotations

from functools import lru_cache

from game_core.errors import InvalidInput

DEFAULT_CHUNK_SIZE = 200_000
DEFAULT_LIMIT_MB = 300
READ_AMPLIFICATION = 4
MEASURE_ROWS = 2_000
MB = 1024 * 1024


class ChunkSizeTooLarge(InvalidInput):
    """The chunk's estimated peak memory exceeds the limit."""


@lru_cache(maxsize=1)
def results_bytes_per_row() -> float:
    """Bytes per row of a typed results chunk as the Pandera engine holds it (measured)."""
    from datetime import datetime, timedelta, timezone

    from checks import catalogue_spec
    from checks.pandera_engine import _to_dtype, pinned_dtypes

    dtypes = pinned_dtypes("results")
    read = list(dict.fromkeys(["id", *(c for r in catalogue_spec.ROW_RULES if r["table"] == "results" for c in r["columns"])]))
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    samples = {
        "Int64": lambda i: 1_000_000 + i,
        "float64": lambda i: 52.5 + i % 100,
        "string[python]": lambda i: ("words", "time")[i % 2],
    }
    columns = {}
    for name in read:
        dtype = dtypes[name]
        if dtype.startswith("datetime64"):
            values = [(start + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S.%f") for i in range(MEASURE_ROWS)]
            columns[name] = _to_dtype(values, dtype)
        else:
            columns[name] = _to_dtype([samples[dtype](i) for i in range(MEASURE_ROWS)], dtype)
    import pandas as pd

    frame = pd.DataFrame(columns)
    return float(frame.memory_usage(index=True, deep=True).sum()) / MEASURE_ROWS


def estimated_peak_bytes(chunk_size: int) -> int:
    return int(chunk_size * results_bytes_per_row() * READ_AMPLIFICATION)


def check_chunk_size(chunk_size: int, *, limit_mb: int = DEFAULT_LIMIT_MB) -> None:
    """Raise InvalidInput (exit 2) unless `chunk_size` is a positive integer whose
    estimated peak stays within `limit_mb`; the message says how much it would need."""
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise InvalidInput(f"chunk size {chunk_size!r} is not a positive integer of rows")
    peak = estimated_peak_bytes(chunk_size)
    if peak > limit_mb * MB:
        per_row = results_bytes_per_row() * READ_AMPLIFICATION
        largest = int(limit_mb * MB // per_row)
        raise ChunkSizeTooLarge(
            f"chunk size {chunk_size:,} rows would need about {peak / MB:,.0f} MB at peak "
            f"({results_bytes_per_row():.0f} bytes per results row in the frame, about {READ_AMPLIFICATION}x that "
            f"while a chunk is read); the limit is {limit_mb} MB: use at most {largest:,} rows "
            f"(default {DEFAULT_CHUNK_SIZE:,})"
        )
