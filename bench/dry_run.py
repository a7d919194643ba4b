"""Migration dry-run speed, side by side with the anchor, in one run.

    .venv/bin/python bench/dry_run.py                         # 1 GB (100,000 x 65) and 10 M (100,000 x 100) databases
    .venv/bin/python bench/dry_run.py --players 5000 --ten-million-players 0   # a quick look

- snapshot: the dry run's SQLite snapshot step (the online backup API from a read
  transaction on the source into a new file, `integrity.migrate.snapshot`) vs
  `cp source copy && sync`, median of --repeat runs each (goal <= 2.5x). The copies are
  removed untimed between runs.
- one full dry run of a safe revision (a nullable column added to `players`) on the 1 GB
  database, every phase printed with its time and rows per second, the migration's own
  time separately, against the anchor measured in the same run just before and just
  after it: `cp source copy && sync` plus one full SQL audit of the source (the audit the
  dry run runs, `data_audit_failures`: the whole catalogue). Goal: the dry run under 4
  times the anchor (the mean of its two measurements; both printed).
- one-row change: a data revision that changes `wpm` of ONE results row, dry-run on the
  10-million-result database: the report must name that row by its primary key.

Databases are built once with `simulate --seed 1` under bench/.work/ (bench.common); the
dry runs copy them, never write them. Everything else lives in bench/.work/dry-run-PID/,
removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.backups import settings_for  # noqa: E402
from bench.common import build_sqlite_database, machine_line, median_seconds  # noqa: E402

WORK = Path(__file__).resolve().parent / ".work"

SAFE_REVISION = '''"""Add a nullable country column (safe)."""
from alembic import op
import sqlalchemy as sa
revision = "bench_add_country"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None
def upgrade():
    op.add_column("players", sa.Column("country", sa.String(2)))
def downgrade():
    op.drop_column("players", "country")
'''

ONE_ROW_REVISION = '''"""Change the wpm of one result (what the dry run must find)."""
from alembic import op
revision = "bench_one_row"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None
def upgrade():
    op.execute("UPDATE results SET wpm = wpm + 1 WHERE id = {row_id}")
def downgrade():
    op.execute("UPDATE results SET wpm = wpm - 1 WHERE id = {row_id}")
'''


def alembic_ini(folder: Path, revision_text: str) -> Path:
    from game_core.migrations import MIGRATIONS_DIR

    versions = folder / "versions"
    versions.mkdir(parents=True)
    (versions / "case.py").write_text(revision_text)
    ini = folder / "alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = {MIGRATIONS_DIR}\npath_separator = space\nversion_locations = {MIGRATIONS_DIR / 'versions'} {versions}\n")
    return ini


def bench_snapshot(database: Path, scratch: Path, repeat: int) -> None:
    from game_core.db import create_engine
    import sqlalchemy as sa

    from integrity.db.sqlite_snapshot import backup_api_copy

    copy = scratch / "copy.db"

    def clean():
        for leftover in scratch.glob("copy.db*"):
            leftover.unlink()

    def ours():
        clean()
        engine = create_engine(str(database), read_only=True)
        try:
            with engine.connect() as connection:
                connection.execute(sa.text("SELECT count(*) FROM sqlite_schema")).all()
                backup_api_copy(connection.connection.driver_connection, copy)
        finally:
            engine.dispose()
        subprocess.run(["sync"], check=True)

    def anchor():
        clean()
        subprocess.run(["cp", str(database), str(copy)], check=True)
        subprocess.run(["sync"], check=True)

    anchor_seconds = median_seconds(anchor, repeat)
    ours_seconds = median_seconds(ours, repeat)
    clean()
    ratio = ours_seconds / anchor_seconds
    size = database.stat().st_size / 1e9
    print(f"snapshot of {size:.2f} GB: ours {ours_seconds:.2f}s vs cp+sync {anchor_seconds:.2f}s: {ratio:.2f}x "
          f"(goal <= 2.5x: {'met' if ratio <= 2.5 else 'MISSED'}), median of {repeat}", flush=True)


def anchor_seconds(database: Path, scratch: Path) -> tuple[float, float]:
    """(`cp` + `sync` of the database, one full SQL audit of it), in seconds."""
    from game_core.db import create_engine

    from integrity.migrate.dry_run import data_audit_failures

    copy = scratch / "anchor-copy.db"
    started = time.perf_counter()
    subprocess.run(["cp", str(database), str(copy)], check=True)
    subprocess.run(["sync"], check=True)
    copied = time.perf_counter() - started
    copy.unlink()
    engine = create_engine(str(database), read_only=True)
    try:
        started = time.perf_counter()
        with engine.connect() as connection:
            data_audit_failures(connection)
        audited = time.perf_counter() - started
    finally:
        engine.dispose()
    return copied, audited


def run_dry_run(database: Path, folder: Path, revision_text: str):
    from integrity import api
    from integrity.invocation import Invocation

    ini = alembic_ini(folder, revision_text)
    settings = settings_for(f"sqlite:///{database}", folder / "repository")
    settings = replace(settings, state=replace(settings.state, dir=folder / "state"))
    started = time.perf_counter()
    report = api.migrate_dry_run(Invocation(settings, command="migrate dry-run"), alembic_config=ini, from_live=True)
    return report, time.perf_counter() - started


def print_report(title: str, report, seconds: float) -> None:
    print(f"{title}: {seconds:.1f}s in all, exit {int(report.exit_code)}, {report.errors} errors, {report.warnings} warnings", flush=True)
    for phase in report.phases:
        rate = f", {phase.rows_per_second:,} rows/s" if phase.rows_per_second else ""
        print(f"  {phase.name:32} {phase.seconds:9.2f}s{rate}")
    for revision in report.revisions:
        print(f"  migration {revision.id}: {revision.seconds}s over {len(revision.statements)} statements")
    for finding in report.findings:
        print(f"  {finding.severity.value} {finding.rule}: {finding.message} samples={list(finding.samples)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--players", type=int, default=100_000)
    parser.add_argument("--tests-per-player", type=int, default=65)
    parser.add_argument("--ten-million-players", type=int, default=100_000, help="0 skips the one-row run")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(machine_line(), flush=True)
    WORK.mkdir(exist_ok=True)
    folder = WORK / f"dry-run-{os.getpid()}"
    folder.mkdir()
    try:
        database = build_sqlite_database(WORK, args.players, args.tests_per_player)
        bench_snapshot(database, folder, args.repeat)
        anchors = [anchor_seconds(database, folder)]
        report, seconds = run_dry_run(database, folder / "safe", SAFE_REVISION)
        anchors.append(anchor_seconds(database, folder))
        print_report(f"dry run of a safe revision on {database.name}", report, seconds)
        for when, (copied, audited) in zip(("before", "after"), anchors):
            print(f"  anchor {when} the dry run: cp+sync {copied:.2f}s + full SQL audit {audited:.2f}s = {copied + audited:.2f}s")
        anchor = sum(copied + audited for copied, audited in anchors) / len(anchors)
        ratio = seconds / anchor
        print(f"safe dry run: {seconds:.1f}s = {ratio:.2f}x the anchor ({anchor:.1f}s, mean of the two) "
              f"(goal < 4x: {'met' if ratio < 4 else 'MISSED'})", flush=True)
        if args.ten_million_players:
            big = build_sqlite_database(WORK, args.ten_million_players, 100)
            import sqlite3

            with sqlite3.connect(f"file:{big}?mode=ro", uri=True) as reader:
                rows, highest = reader.execute("SELECT count(*), max(id) FROM results").fetchone()
            row_id = highest // 2 + 7  # somewhere in the middle, not at a page boundary
            report, seconds = run_dry_run(big, folder / "one-row", ONE_ROW_REVISION.format(row_id=row_id))
            print_report(f"dry run changing results.id={row_id} among {rows:,} results", report, seconds)
            named = any(f"id={row_id}" in sample for f in report.findings for sample in f.samples)
            print(f"one-row change found and named by its key: {'yes' if named else 'NO'}", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
