"""The static pass with squawk, per revision (issue 18's target: under 2 s per revision).

    .venv/bin/python bench/migrate_lint.py              # 10 revisions on top of the game's history
    .venv/bin/python bench/migrate_lint.py --revisions 30 --repeat 5

A chain of revisions (each a few operations: a column, an index, a type change, a raw
UPDATE, a batch alter) is written into a scratch Alembic project; the static pass
(`integrity.migrate.static_pass.lint_revisions`, which runs squawk once for all of them)
is timed --repeat times, and squawk's own process separately on the same SQL; then the
whole `integrity migrate lint --from 0001_initial_schema` as a user runs it (process
start included). Median of the repeats; per revision = median / revisions.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

UPGRADES = (
    'op.add_column("players", sa.Column("country_{n}", sa.String(2)))',
    'op.create_index("ix_results_xp_{n}", "results", ["xp"])',
    'op.alter_column("results", "mode_param", type_=sa.BigInteger, existing_type=sa.Integer)',
    'op.execute("UPDATE progress SET level = level WHERE player_id < 0")',
    'op.drop_index("ix_results_leaderboard", table_name="results")\n'
    '    op.create_index("ix_results_leaderboard", "results", ["mode", "mode_param", "wpm"])',
)


def project(folder: Path, count: int) -> Path:
    from game_core.migrations import MIGRATIONS_DIR

    versions = folder / "versions"
    versions.mkdir(parents=True)
    down = "0001_initial_schema"
    for n in range(count):
        rev = f"b{n:04d}"
        upgrade = "\n    ".join(UPGRADES[i % len(UPGRADES)].format(n=n) for i in range(n, n + 3))
        (versions / f"{rev}.py").write_text(
            f'"""Bench revision {n}."""\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
            f'revision = "{rev}"\ndown_revision = "{down}"\n\n\ndef upgrade():\n    {upgrade}\n\n\n'
            'def downgrade():\n    op.execute("SELECT 1")\n'
        )
        down = rev
    ini = folder / "alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = {MIGRATIONS_DIR}\npath_separator = space\n"
                   f"version_locations = {MIGRATIONS_DIR / 'versions'} {versions}\n")
    return ini


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revisions", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from integrity.migrate.project import MigrationProject
    from integrity.migrate.squawk import squawk_binary, squawk_findings
    from integrity.migrate.static_pass import lint_revisions

    folder = Path(tempfile.mkdtemp(prefix="bench-lint-"))
    try:
        ini = project(folder, args.revisions)
        loaded = MigrationProject.load(ini)
        pending = loaded.pending("0001_initial_schema")
        passes, squawks = [], []
        for _ in range(args.repeat):
            started = time.perf_counter()
            report = lint_revisions(loaded, pending, start_revision="0001_initial_schema")
            passes.append(time.perf_counter() - started)
            squawks.append(squawk_findings(report.revisions).seconds)
        found = sum(f.rule.startswith("squawk:") for f in report.findings)
        env = {**os.environ, "XDG_DATA_HOME": str(folder / "xdg")}
        commands = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            subprocess.run([str(Path(sys.executable).parent / "integrity"), "migrate", "lint", "--alembic-config", str(ini),
                            "--from", "0001_initial_schema"], env=env, capture_output=True, check=False)
            commands.append(time.perf_counter() - started)
        n = args.revisions
        static, squawk, command = (statistics.median(x) for x in (passes, squawks, commands))
        print(f"squawk: {squawk_binary()}; {n} revisions, {len(report.findings)} findings ({found} from squawk); "
              f"median of {args.repeat}")
        print(f"static pass with squawk: {static:.3f} s, {static / n:.3f} s per revision (target < 2 s)")
        print(f"  of which the one squawk process: {squawk:.3f} s ({squawk / n * 1000:.1f} ms per revision)")
        print(f"`integrity migrate lint` as a command: {command:.3f} s, {command / n:.3f} s per revision")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
