"""What every benchmark shares: the machine line and the simulated databases."""

from __future__ import annotations

import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path


def machine_line() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"machine: {cores} cores, {model}, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {platform.system()} {platform.release()}"
    )


def median_seconds(action, repeat: int) -> float:
    """The median of `repeat` timed runs after one warm-up run (page cache, imports)."""
    action()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def cpu_seconds() -> float:
    """User and system CPU of this process (all its threads) and of its waited-for children."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def side_by_side(ours, anchor, repeat: int, *, prepare=lambda: None, warm_up: bool = True,
                 extra: dict | None = None) -> dict[str, float]:
    """Median seconds of `ours`, of `anchor` and of each `extra` action (as `median_seconds`:
    one warm-up each, then `repeat` timed runs), alternating within every round so that a
    burst of load on the shared machine hits them all; `prepare` runs untimed before every
    run. Keys: "ours", "anchor" and the names of `extra`, wall seconds; the same names with
    " cpu": the median CPU seconds on this host (this process's threads and the tools it
    waited for; a database server's own work is in neither side), which the load of other
    processes on a shared machine does not change the way it changes the wall time."""
    actions = {"anchor": anchor, **(extra or {}), "ours": ours}
    for action in actions.values() if warm_up else ():
        prepare()
        action()
    times: dict[str, list[float]] = {name: [] for name in actions}
    cpu: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(repeat):
        for name, action in actions.items():
            prepare()
            started, started_cpu = time.perf_counter(), cpu_seconds()
            action()
            times[name].append(time.perf_counter() - started)
            cpu[name].append(cpu_seconds() - started_cpu)
    medians = {name: statistics.median(values) for name, values in times.items()}
    medians.update({f"{name} cpu": statistics.median(values) for name, values in cpu.items()})
    return medians


def build_sqlite_database(work: Path, players: int, tests_per_player: int) -> Path:
    """The benchmark database, built once with `typing-game simulate --seed 1` and kept."""
    path = work / f"bench-{players}x{tests_per_player}.db"
    if path.exists():
        return path
    partial = path.with_suffix(".partial.db")
    for leftover in work.glob(partial.name + "*"):
        leftover.unlink()
    print(f"building {path.name} with typing-game simulate --seed 1 (once)...", flush=True)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "game_core.cli", "--database-url", f"sqlite:///{partial}", "simulate",
         "--players", str(players), "--tests-per-player", str(tests_per_player), "--seed", "1"],
        check=True, stdout=subprocess.DEVNULL,
    )
    partial.rename(path)
    print(f"built in {time.perf_counter() - started:.0f}s: {path.stat().st_size / 1e9:.2f} GB", flush=True)
    return path


def peak_rss_mb(command: list[str], env: dict[str, str]) -> float:
    """The peak resident memory of `command` run to its end (SystemExit when it fails)."""
    import os
    import subprocess

    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed")
    return usage.ru_maxrss / 1024
