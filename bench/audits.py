"""Audit speed and memory, side by side with the anchors, in one run.

    .venv/bin/python bench/audits.py                                  # 10 M results: 100,000 players x 100 tests
    .venv/bin/python bench/audits.py --players 20000 --tests-per-player 50   # a quicker look (1 M results)

Measured on SQLite databases built once with `typing-game simulate --seed 1` (kept under
bench/.work/), times as the median of --repeat runs after one warm-up (warm page cache):

- SQL engine: the full audit (`checks.run_audits(connection)`, every rule of the
  catalogue) against HAND_WRITTEN_SQL below, the same rules written by hand as one would
  for SQLite: one pass per table with a CASE per rule, and one aggregate of results per
  (player, mode, mode_param) shared by the progress and personal-best rules. Goal: ratio
  <= 1.3; memory growth over the process's baseline < 100 MB.
- Pandera engine: the row rules of results (`engine="pandera"`, `tables=["results"]`,
  row rules only) against a plain chunked read of the same table,
  `for chunk in pd.read_sql("SELECT * FROM results", connection, chunksize=DEFAULT_CHUNK_SIZE)`.
  Goal: speed >= 0.6 times the anchor's; peak < 300 MB; peak memory grows < 10% from a
  database a tenth the size (--players / 10) to this one.
- Incremental: an audit of the newest 100,000 results (`since` = watermarks 100,000
  rows below the top of results, exactly what `integrity audit --since-last` passes after
  100,000 new results), timed with the cross-table rules (on the players the new rows
  touch) and for the row rules alone. Goal: < 2 s.

Memory is measured in child processes (this file with --child): the baseline is the
resident size after imports and the first connection, the peak is the kernel's high-water
mark (VmHWM) after the work.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
sys.path.insert(0, str(HERE.parent))

from bench.common import build_sqlite_database, machine_line, median_seconds  # noqa: E402

INCREMENTAL_ROWS = 100_000

# ---------------------------------------------------------------- the anchor: the same rules by hand
# `CASE WHEN p THEN 0 ELSE 1 END` counts a row whose predicate is FALSE or NULL as failing,
# as the catalogue does. :now is the audit time as SQLite stores timestamps.

HAND_WRITTEN_SQL = {
    "players": """
SELECT count(*),
  sum(CASE WHEN length(username) BETWEEN 1 AND 32 AND username NOT GLOB '*[^A-Za-z0-9_.-]*' THEN 0 ELSE 1 END),
  sum(CASE WHEN created_at <= :now THEN 0 ELSE 1 END)
FROM players
""",
    "results": """
SELECT count(*),
  sum(CASE WHEN accuracy >= 0 AND accuracy <= 100 THEN 0 ELSE 1 END),
  sum(CASE WHEN wpm >= 0 THEN 0 ELSE 1 END),
  sum(CASE WHEN raw_wpm >= 0 THEN 0 ELSE 1 END),
  sum(CASE WHEN duration_ms >= 1000 THEN 0 ELSE 1 END),
  sum(CASE WHEN mode IN ('words', 'time') THEN 0 ELSE 1 END),
  sum(CASE WHEN mode_param > 0 THEN 0 ELSE 1 END),
  sum(CASE WHEN correct_word_chars >= 0 AND correct_spaces >= 0 AND correct_chars >= 0 AND incorrect_chars >= 0
           AND extra_chars >= 0 AND missed_chars >= 0 AND correct_keystrokes >= 0 AND incorrect_keystrokes >= 0
           THEN 0 ELSE 1 END),
  sum(CASE WHEN metrics_version IN (1) THEN 0 ELSE 1 END),
  sum(CASE WHEN started_at <= :now THEN 0 ELSE 1 END),
  sum(CASE WHEN created_at <= :now THEN 0 ELSE 1 END),
  sum(CASE WHEN wpm <= 250 THEN 0 ELSE 1 END),
  sum(CASE WHEN wpm IS NOT NULL AND duration_ms IS NOT NULL AND (wpm <= 350 OR duration_ms < 15000) THEN 0 ELSE 1 END),
  sum(CASE WHEN raw_wpm >= wpm THEN 0 ELSE 1 END),
  sum(CASE WHEN duration_ms > 0 AND abs(wpm - (correct_word_chars + correct_spaces) * 12000.0 / duration_ms) <= 0.01
           THEN 0 ELSE 1 END),
  sum(CASE WHEN duration_ms > 0 AND abs(raw_wpm - (correct_chars + incorrect_chars + extra_chars + correct_spaces)
           * 12000.0 / duration_ms) <= 0.01 THEN 0 ELSE 1 END),
  sum(CASE WHEN accuracy IS NOT NULL AND correct_keystrokes + incorrect_keystrokes >= 0
           AND abs(accuracy - CASE WHEN correct_keystrokes + incorrect_keystrokes > 0
                   THEN correct_keystrokes * 100.0 / (correct_keystrokes + incorrect_keystrokes) ELSE 100.0 END) <= 0.01
           THEN 0 ELSE 1 END),
  sum(CASE WHEN correct_word_chars >= 0 AND correct_spaces >= 0 AND correct_keystrokes >= 0 AND incorrect_keystrokes >= 0
           AND CASE WHEN correct_keystrokes + incorrect_keystrokes = 0 THEN xp = 0
               ELSE xp * (correct_keystrokes + incorrect_keystrokes) <= (correct_word_chars + correct_spaces) * correct_keystrokes
                AND (correct_word_chars + correct_spaces) * correct_keystrokes < (xp + 1) * (correct_keystrokes + incorrect_keystrokes)
               END
           THEN 0 ELSE 1 END)
FROM results
""",
    "progress": """
SELECT count(*),
  sum(CASE WHEN xp >= 0 THEN 0 ELSE 1 END),
  sum(CASE WHEN level >= 1 THEN 0 ELSE 1 END),
  sum(CASE WHEN tests_completed >= 1 THEN 0 ELSE 1 END),
  sum(CASE WHEN time_typing_ms >= 0 THEN 0 ELSE 1 END),
  sum(CASE WHEN best_wpm >= 0 THEN 0 ELSE 1 END),
  sum(CASE WHEN (level - 1) * (49 * (level - 1) + 151) <= 2 * xp AND 2 * xp < level * (49 * (level - 1) + 200)
           AND level >= 1 THEN 0 ELSE 1 END),
  sum(CASE WHEN updated_at <= :now THEN 0 ELSE 1 END)
FROM progress
""",
    "personal_bests": """
SELECT count(*),
  sum(CASE WHEN mode IN ('words', 'time') THEN 0 ELSE 1 END),
  sum(CASE WHEN mode_param > 0 THEN 0 ELSE 1 END),
  sum(CASE WHEN wpm >= 0 THEN 0 ELSE 1 END),
  sum(CASE WHEN accuracy >= 0 AND accuracy <= 100 THEN 0 ELSE 1 END)
FROM personal_bests
""",
    "results x players": """
SELECT
  sum(CASE WHEN p.id IS NULL THEN 1 ELSE 0 END),
  sum(CASE WHEN r.started_at >= p.created_at THEN 0 ELSE 1 END)
FROM results r LEFT JOIN players p ON p.id = r.player_id
""",
    "results natural key": """
SELECT coalesce(sum(n), 0) FROM (
  SELECT count(*) AS n FROM results GROUP BY player_id, started_at HAVING count(*) > 1
)
""",
    "caches x results": """
WITH per_mode AS (
  SELECT player_id, mode, mode_param, count(*) AS tests, sum(xp) AS xp, sum(duration_ms) AS ms, max(wpm) AS best
  FROM results GROUP BY player_id, mode, mode_param
), per_player AS (
  SELECT player_id, sum(tests) AS tests, sum(xp) AS xp, sum(ms) AS ms, max(best) AS best
  FROM per_mode GROUP BY player_id
), progress_counts AS (
  SELECT sum(CASE WHEN p.id IS NULL THEN 1 ELSE 0 END) AS orphans,
    sum(CASE WHEN g.xp = coalesce(a.xp, 0) THEN 0 ELSE 1 END) AS xp,
    sum(CASE WHEN a.xp IS NOT NULL AND (g.level - 1) * (49 * (g.level - 1) + 151) <= 2 * a.xp
             AND 2 * a.xp < g.level * (49 * (g.level - 1) + 200) THEN 0 ELSE 1 END) AS level,
    sum(CASE WHEN g.tests_completed = a.tests THEN 0 ELSE 1 END) AS tests,
    sum(CASE WHEN g.time_typing_ms = a.ms THEN 0 ELSE 1 END) AS ms,
    sum(CASE WHEN abs(g.best_wpm - a.best) <= 0.001 THEN 0 ELSE 1 END) AS best
  FROM progress g LEFT JOIN per_player a ON a.player_id = g.player_id LEFT JOIN players p ON p.id = g.player_id
), best_counts AS (
  SELECT sum(CASE WHEN p.id IS NULL THEN 1 ELSE 0 END) AS orphans,
    sum(CASE WHEN r.id IS NULL THEN 1 ELSE 0 END) AS no_result,
    sum(CASE WHEN r.player_id = b.player_id AND r.mode = b.mode AND r.mode_param = b.mode_param
             AND r.wpm = b.wpm AND r.accuracy = b.accuracy THEN 0 ELSE 1 END) AS matches,
    sum(CASE WHEN b.wpm = m.best THEN 0 ELSE 1 END) AS is_best
  FROM personal_bests b LEFT JOIN players p ON p.id = b.player_id LEFT JOIN results r ON r.id = b.result_id
  LEFT JOIN per_mode m ON m.player_id = b.player_id AND m.mode = b.mode AND m.mode_param = b.mode_param
)
SELECT
  (SELECT count(*) FROM per_player a WHERE NOT EXISTS (SELECT 1 FROM progress g WHERE g.player_id = a.player_id)),
  (SELECT count(*) FROM per_mode m WHERE NOT EXISTS (
     SELECT 1 FROM personal_bests b WHERE b.player_id = m.player_id AND b.mode = m.mode AND b.mode_param = m.mode_param)),
  progress_counts.*, best_counts.*
FROM progress_counts, best_counts
""",
}


def sqlite_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def open_engine(database: Path):
    from game_core.db import create_engine

    return create_engine(str(database), read_only=True)


def results_count(database: Path) -> int:
    engine = open_engine(database)
    with engine.connect() as connection:
        count = connection.exec_driver_sql("SELECT count(*) FROM results").scalar_one()
    engine.dispose()
    return count


# ---------------------------------------------------------------- the measured actions


def action(kind: str, database: Path):
    """A callable doing one measured job on `database`, in one read transaction."""
    import checks

    engine = open_engine(database)
    if kind == "sql":
        def run():
            with engine.connect() as connection:
                report = checks.run_audits(connection, sample_limit=5)
                connection.rollback()
                return report
    elif kind == "hand":
        def run():
            with engine.connect() as connection:
                for sql in HAND_WRITTEN_SQL.values():
                    connection.exec_driver_sql(sql.replace(":now", f"'{sqlite_now()}'")).all()
                connection.rollback()
    elif kind in ("pandera", "pandera-all"):
        row_rules = [rule.id for rule in checks.catalogue() if rule.table == "results" and rule.kind == "row"]

        def run():
            with engine.connect() as connection:
                if kind == "pandera":
                    report = checks.run_audits(connection, rules=row_rules, engine="pandera")
                else:
                    report = checks.run_audits(connection, engine="pandera")
                connection.rollback()
                return report
    elif kind == "read_sql":
        import pandas as pd

        def run():
            with engine.connect() as connection:
                for _chunk in pd.read_sql("SELECT * FROM results", connection.connection.driver_connection,
                                          chunksize=checks.DEFAULT_CHUNK_SIZE):
                    pass
                connection.rollback()
    elif kind in ("incremental", "incremental-rows"):
        with engine.connect() as connection:
            top = {name: connection.exec_driver_sql(f"SELECT coalesce(max({key}), 0) FROM {name}").scalar_one()
                   for name, key in (("players", "id"), ("results", "id"))}
        since = {"results": max(top["results"] - INCREMENTAL_ROWS, 0), "players": top["players"]}
        rules = None
        if kind == "incremental-rows":
            rules = [rule.id for rule in checks.catalogue() if rule.kind == "row"]

        def run():
            with engine.connect() as connection:
                report = checks.run_audits(connection, rules=rules, since=since)
                connection.rollback()
                return report
    else:
        raise SystemExit(f"unknown action {kind}")
    return run


def _proc_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def child(kind: str, database: Path) -> None:
    """Run one job once in this fresh process; print seconds, baseline and peak memory."""
    import checks  # noqa: F401

    if kind.startswith("pandera") or kind == "read_sql":
        import pandas  # noqa: F401
        import pandera.pandas  # noqa: F401
    run = action(kind, database)
    engine = open_engine(database)
    with engine.connect() as connection:
        connection.exec_driver_sql("SELECT count(*) FROM players").scalar_one()
    engine.dispose()
    baseline = _proc_kb("VmRSS")
    started = time.perf_counter()
    run()
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "baseline_mb": baseline / 1024, "peak_mb": _proc_kb("VmHWM") / 1024}))


def measure_child(kind: str, database: Path) -> dict:
    output = subprocess.run([sys.executable, __file__, "--child", kind, str(database)],
                            check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


# ---------------------------------------------------------------- the report


def bench(database: Path, small: Path, repeat: int) -> None:
    import checks

    rows = results_count(database)
    small_rows = results_count(small)
    print(f"database {database.name}: {rows:,} results, {database.stat().st_size / 1e9:.2f} GB")
    print(f"rules: {len(checks.catalogue())}; Pandera chunk size (checks.DEFAULT_CHUNK_SIZE): {checks.DEFAULT_CHUNK_SIZE:,}")

    ours = median_seconds(action("sql", database), repeat)
    anchor = median_seconds(action("hand", database), repeat)
    memory = measure_child("sql", database)
    growth = memory["peak_mb"] - memory["baseline_mb"]
    print(f"SQL engine full audit   ours {ours:7.2f}s ({rows / ours:,.0f} results/s)   anchor (hand-written SQL) "
          f"{anchor:7.2f}s ({rows / anchor:,.0f} results/s)   ratio {ours / anchor:4.2f} (goal <= 1.30)")
    print(f"SQL engine memory       baseline {memory['baseline_mb']:.0f} MB   peak {memory['peak_mb']:.0f} MB   "
          f"growth {growth:.0f} MB (goal < 100 MB)")

    ours = median_seconds(action("pandera", database), repeat)
    anchor = median_seconds(action("read_sql", database), repeat)
    print(f"Pandera row rules       ours {ours:7.2f}s ({rows / ours:,.0f} rows/s)   anchor (chunked pd.read_sql) "
          f"{anchor:7.2f}s ({rows / anchor:,.0f} rows/s)   speed {anchor / ours:4.2f} of the anchor (goal >= 0.60)")
    big = measure_child("pandera", database)
    little = measure_child("pandera", small)
    anchor_memory = measure_child("read_sql", database)
    change = (big["peak_mb"] - little["peak_mb"]) / little["peak_mb"]
    caveat = ""
    if small_rows < 2 * checks.DEFAULT_CHUNK_SIZE:
        caveat = " (the smaller database is under two chunks, so its chunks are smaller: not the 1 M vs 10 M comparison)"
    print(f"Pandera memory          peak {big['peak_mb']:.0f} MB at {rows:,} rows (goal < 300 MB), "
          f"{little['peak_mb']:.0f} MB at {small_rows:,} rows: {change:+.1%} (goal < 10%); "
          f"anchor peak {anchor_memory['peak_mb']:.0f} MB{caveat}")
    whole = measure_child("pandera-all", database)
    print(f"Pandera full audit      {whole['seconds']:7.2f}s (cross-table rules in SQL), peak {whole['peak_mb']:.0f} MB")

    with_cross = median_seconds(action("incremental", database), repeat)
    rows_only = median_seconds(action("incremental-rows", database), repeat)
    print(f"incremental {INCREMENTAL_ROWS:,} rows  whole catalogue {with_cross:6.2f}s "
          f"({INCREMENTAL_ROWS / with_cross:,.0f} rows/s) (goal < 2 s); row rules alone {rows_only:6.2f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--players", type=int, default=100_000)
    parser.add_argument("--tests-per-player", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "DATABASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    print(machine_line())
    WORK.mkdir(exist_ok=True)
    database = build_sqlite_database(WORK, args.players, args.tests_per_player)
    small = build_sqlite_database(WORK, max(args.players // 10, 1), args.tests_per_player)
    bench(database, small, args.repeat)


if __name__ == "__main__":
    main()
