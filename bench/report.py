"""`integrity report --html` after a simulated month of routine: time and size.

Target (issue 19): on the 1 GB database's ledger after a month of the default schedule,
the report renders in under 5 s and under 5 MB.

The ledger is a month of bench/routine.py (the default [schedule]: hourly backups and
verifies, an incremental audit every 15 minutes, a probe every minute, the daily jobs:
about 47,000 runs and 2,900 audits, with the routine's incidents). The ledger does not
depend on the guarded database: only `status`, which the report includes, reads the
database (its row counts and schema). So the report runs against the 1 GB database
itself (`--players 100000 --tests-per-player 65`, built once with `typing-game simulate
--seed 1` under bench/.work/, as bench/recovery.py builds it), with one real backup of a
small store in the repository so that the catalogue and journal are read too.

Each measurement is `integrity report --html PATH --since 30d` as a real subprocess (the
command's whole cost: interpreter start, imports, the status, the ledger, the render, the
atomic write), median of --repeat runs after a warm-up; the anchor is `integrity status`
measured the same way in the same run (the report includes a status).

    .venv/bin/python bench/report.py [--days 30] [--repeat 3] [--players N --tests-per-player M]
        [--keep PATH]  (copy the last page there, e.g. for a screenshot)
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.common import build_sqlite_database, machine_line  # noqa: E402
from bench.routine import simulate_routine  # noqa: E402

WORK = HERE / ".work"
INTEGRITY = [str(Path(sys.executable).parent / "integrity")]
TARGET_SECONDS, TARGET_BYTES = 5.0, 5 * 1024 * 1024


def timed(args: list[str], env: dict[str, str], repeat: int) -> tuple[float, float, subprocess.CompletedProcess]:
    """(median wall seconds, median CPU seconds of the child, the last run). The CPU time
    (user + system) is what the command costs; on a loaded machine the wall time is that
    plus the waits for a core, so both are printed."""
    subprocess.run(INTEGRITY + args, env=env, capture_output=True, text=True)  # warm-up: page cache
    walls, cpus, completed = [], [], None
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        completed = subprocess.run(INTEGRITY + args, env=env, capture_output=True, text=True)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus), completed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--players", type=int, default=100_000)
    parser.add_argument("--tests-per-player", type=int, default=65)
    parser.add_argument("--keep", type=Path, help="copy the last page here")
    options = parser.parse_args()

    print(machine_line())
    WORK.mkdir(exist_ok=True)
    database = build_sqlite_database(WORK, options.players, options.tests_per_player)
    results = options.players * options.tests_per_player
    work = Path(tempfile.mkdtemp(prefix="report-", dir=WORK))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRITY_")}
        env.update({"XDG_DATA_HOME": str(work / "xdg"), "INTEGRITY_DATABASE_URL": f"sqlite:///{database}",
                    "INTEGRITY_BACKUPS__REPOSITORY": str(work / "repo"), "INTEGRITY_STATE__DIR": str(work / "state"),
                    "INTEGRITY_METRICS__PATH": str(work / "integrity.prom")})
        (work / "repo").mkdir(parents=True)
        # One real backup in the repository (of a small store: the catalogue's cost does not
        # grow with the database, and a backup of 1 GB is bench/backups.py's business).
        small = work / "small.db"
        subprocess.run([sys.executable, "-m", "game_core.cli", "--database-url", f"sqlite:///{small}", "simulate",
                        "--players", "20", "--tests-per-player", "5", "--seed", "1"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(INTEGRITY + ["backup", "create"], env={**env, "INTEGRITY_DATABASE_URL": f"sqlite:///{small}"},
                       check=True, capture_output=True)

        from integrity.ledger import Ledger

        now = datetime.now(timezone.utc)
        start = now.replace(minute=0, second=0, microsecond=0) - timedelta(days=options.days)
        started = time.perf_counter()
        ledger = Ledger.open(work / "state")
        try:
            written = simulate_routine(ledger, start=start, days=options.days, results_rows=results)
        finally:
            ledger.close()
        print(f"ledger: {options.days} days of routine, {sum(written.values()):,} runs "
              f"({', '.join(f'{k} {v:,}' for k, v in sorted(written.items()))}) written in "
              f"{time.perf_counter() - started:.1f}s; {(work / 'state' / 'ledger.db').stat().st_size / 1e6:.1f} MB")
        print(f"database: {database.name}, {database.stat().st_size / 1e9:.2f} GB, {results:,} results")

        status_seconds, status_cpu, _ = timed(["status"], env, options.repeat)
        page = work / "report.html"
        report_seconds, report_cpu, completed = timed(["report", "--html", str(page), "--since", f"{options.days}d"],
                                                      env, options.repeat)
        if completed.returncode != 0:
            raise SystemExit(f"integrity report failed ({completed.returncode}): {completed.stderr}")
        size = page.stat().st_size
        print(completed.stdout.strip())
        print(f"load average before: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
        print(f"integrity status: {status_seconds:.2f}s wall, {status_cpu:.2f}s CPU (anchor, median of {options.repeat})")
        print(f"integrity report --html --since {options.days}d: {report_seconds:.2f}s wall, {report_cpu:.2f}s CPU "
              f"(median of {options.repeat}), {report_seconds / status_seconds:.1f}x status's wall, "
              f"{report_cpu / status_cpu:.1f}x its CPU; page {size / 1e6:.2f} MB")
        def verdict(seconds: float) -> str:
            return "met" if seconds < TARGET_SECONDS and size < TARGET_BYTES else "MISSED"

        print(f"target under {TARGET_SECONDS:.0f} s and 5 MB: {verdict(report_seconds)} by the wall time, "
              f"{verdict(report_cpu)} by the CPU time (the wall time of a machine with a core to spare)")
        if options.keep:
            shutil.copyfile(page, options.keep)
            print(f"kept the page at {options.keep}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
