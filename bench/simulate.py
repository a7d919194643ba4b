"""Benchmark: `simulate()` against a bare sqlite3 `executemany` of the same rows.

    .venv/bin/python bench/simulate.py                     # 20,000 players x 65 tests
    .venv/bin/python bench/simulate.py --players 100000    # the 1 GB database (6.5 M results)

In one run, interleaved, median of 3:

(a) `game_core.simulate.simulate()` into a fresh SQLite file: the whole command (players,
    results, the rebuild of progress and personal bests), as results per second;
(b) the anchor: the same result rows, generated into memory before the clock starts,
    inserted with the standard library's sqlite3 `executemany` in one transaction into a
    fresh file with the same schema (the same Alembic history) in WAL mode, as rows per
    second (players are inserted before the clock starts).

Prints both, the ratio (goal: at least 0.7) and the machine. Scratch files live under
bench/.work/ (gitignored) and are removed at the end.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
WORK_DIR = BENCH_DIR / ".work"
GOAL_RATIO = 0.7

sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from bench.common import machine_line  # noqa: E402
from game_core.db import create_engine  # noqa: E402
from game_core.schema_state import upgrade_to_head  # noqa: E402
from game_core.simulate import RESULT_COLUMNS, simulate, sqlite_result_rows, username  # noqa: E402


def remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def make_template(path: Path) -> None:
    """An empty database migrated by the Alembic history, checkpointed into one file."""
    engine = create_engine(str(path), create_missing=True)
    with engine.begin() as connection:
        upgrade_to_head(connection)
    engine.dispose()


def fresh_copy(template: Path, path: Path) -> Path:
    remove_database(path)
    shutil.copyfile(template, path)
    return path


def run_simulate(path: Path, players: int, tests: int, seed: int) -> float:
    engine = create_engine(str(path))
    try:
        began = time.perf_counter()
        summary = simulate(engine, players=players, tests_per_player=tests, seed=seed)
        seconds = time.perf_counter() - began
    finally:
        engine.dispose()
    assert summary.results == players * tests
    return summary.results / seconds


def run_anchor(path: Path, player_rows: list[tuple], result_rows: list[tuple]) -> float:
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("BEGIN")
        connection.executemany("INSERT INTO players (id, username, created_at) VALUES (?, ?, ?)", player_rows)
        connection.execute("COMMIT")
        sql = f"INSERT INTO results ({', '.join(RESULT_COLUMNS)}) VALUES ({', '.join('?' * len(RESULT_COLUMNS))})"
        began = time.perf_counter()
        connection.execute("BEGIN")
        connection.executemany(sql, result_rows)
        connection.execute("COMMIT")
        seconds = time.perf_counter() - began
    finally:
        connection.close()
    return len(result_rows) / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--players", type=int, default=20_000)
    parser.add_argument("--tests-per-player", type=int, default=65)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    players, tests = args.players, args.tests_per_player
    total = players * tests
    print(machine_line())
    print(f"workload: {players:,} players x {tests} tests = {total:,} results, seed {args.seed}")
    print(f"median of {args.repeats} interleaved runs of each")

    WORK_DIR.mkdir(exist_ok=True)
    template = WORK_DIR / "template.db"
    target = WORK_DIR / "bench.db"
    try:
        make_template(template)
        began = time.perf_counter()
        result_rows = list(sqlite_result_rows(args.seed, players, tests))
        # The players' own timestamps do not matter to the anchor: it times results only.
        player_rows = [(i, username(args.seed, i), "2025-01-01 00:00:00.000000") for i in range(1, players + 1)]
        print(f"anchor rows generated in memory in {time.perf_counter() - began:.1f} s (not timed)")

        simulate_rates, anchor_rates = [], []
        size_mb = 0.0
        for attempt in range(1, args.repeats + 1):
            # Interleaved, so that a noisy neighbour slows both sides alike.
            rate = run_simulate(fresh_copy(template, target), players, tests, args.seed)
            size_mb = target.stat().st_size / 1e6  # closing the engine checkpointed the WAL
            simulate_rates.append(rate)
            print(f"  run {attempt}: simulate {rate:,.0f} results/s", end="", flush=True)
            rate = run_anchor(fresh_copy(template, target), player_rows, result_rows)
            anchor_rates.append(rate)
            print(f", anchor {rate:,.0f} rows/s")
        remove_database(target)
    finally:
        remove_database(target)
        remove_database(template)
        if WORK_DIR.exists() and not any(WORK_DIR.iterdir()):
            WORK_DIR.rmdir()

    simulate_median = statistics.median(simulate_rates)
    anchor_median = statistics.median(anchor_rates)
    ratio = simulate_median / anchor_median
    print(f"simulate (players + results + rebuild): {simulate_median:,.0f} results/s (median)")
    print(f"anchor (bare sqlite3 executemany, WAL): {anchor_median:,.0f} rows/s (median)")
    print(f"ratio: {ratio:.2f} (goal >= {GOAL_RATIO}) {'ok' if ratio >= GOAL_RATIO else 'BELOW GOAL'}")
    print(f"database size after simulate: {size_mb:,.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
