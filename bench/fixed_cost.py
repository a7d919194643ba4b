"""The fixed cost of every `integrity` command, side by side with the anchor, in one run.

    .venv/bin/python bench/fixed_cost.py                 # 15 runs of each
    .venv/bin/python bench/fixed_cost.py --repeat 31     # steadier medians on a busy host

Issue 20's goal: `integrity status` on an empty store and `integrity metrics` take at most
0.3 s of wall time more than `python -c pass`, measured as whole processes. Printed:

- whole processes (median of --repeat runs after one warm-up each, interleaved so that
  a burst of load on the host hits every command alike), wall time and CPU time (user +
  system, steadier than wall time on a shared host): `python -c pass` (the anchor),
  `integrity --help`, `integrity status` and `integrity metrics` on an empty store: a
  fresh XDG_DATA_HOME, `integrity init` with its SQLite game database, nothing else. Each
  figure is printed with its excess over the anchor and whether the goal is met.
- in-process per-command cost (typer's CliRunner, as the test suite invokes the CLI):
  `status`, `backup list`, `metrics`, median of --repeat invocations in this process.
- the load average before and after: on a busy host wall time is mostly waiting for a
  core, and the CPU excess is the better estimate of the wall excess an idle host sees.

The processes run with a bytecode cache of their own (PYTHONPYCACHEPREFIX under the work
directory), as an installed tool has its .pyc files: with PYTHONDONTWRITEBYTECODE set (as
in this project's shells) every run would compile the project's modules from source,
which is a cost of the development setup, not of the tool. `--no-bytecode-cache` measures
that setup instead. Everything lives in bench/.work/fixed-cost-PID/, removed at the end.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine_line  # noqa: E402

WORK = Path(__file__).resolve().parent / ".work"
GOAL_SECONDS = 0.3  # issue 20: at most this much more than `python -c pass`
INTEGRITY = [sys.executable, "-m", "integrity.cli"]
PROCESSES = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "integrity --help": [*INTEGRITY, "--help"],
    "integrity status": [*INTEGRITY, "status"],
    "integrity metrics": [*INTEGRITY, "metrics"],
}
HELD_TO_GOAL = ("integrity status", "integrity metrics")
IN_PROCESS = (["status"], ["backup", "list"], ["metrics"])


def environment(work: Path, *, bytecode_cache: bool) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("INTEGRITY_", "GAME_"))}
    env["XDG_DATA_HOME"] = str(work / "data")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    if bytecode_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of one process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # status exits 3 on an empty store (no backup, no audit, no drill yet): that is its verdict.
    if done.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def whole_processes(work: Path, env: dict[str, str], repeat: int) -> dict[str, tuple[float, float]]:
    """{name: (median wall seconds, median CPU seconds)}."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in PROCESSES}
    for command in PROCESSES.values():
        run(command, env, work)  # warm-up: page cache, bytecode cache
    for _ in range(repeat):
        for name, command in PROCESSES.items():
            times[name].append(run(command, env, work))
    return {name: (statistics.median(w for w, _ in values), statistics.median(c for _, c in values))
            for name, values in times.items()}


def in_process(env: dict[str, str], repeat: int) -> dict[str, float]:
    """Median seconds of one CliRunner invocation of each command, in this process."""
    from typer.testing import CliRunner

    from integrity.cli import app

    runner = CliRunner()
    medians = {}
    for args in IN_PROCESS:
        runner.invoke(app, args, env=env)  # warm-up: the imports this command needs
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            result = runner.invoke(app, args, env=env)
            times.append(time.perf_counter() - started)
            if result.exit_code not in (0, 3):
                raise SystemExit(f"integrity {' '.join(args)} exited {result.exit_code}: {result.output}")
        medians[" ".join(args)] = statistics.median(times)
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=15, help="runs of each measurement (median)")
    parser.add_argument("--no-bytecode-cache", action="store_true", help="compile every module from source, as PYTHONDONTWRITEBYTECODE=1 does")
    options = parser.parse_args()
    print(machine_line(), flush=True)
    work = WORK / f"fixed-cost-{os.getpid()}"
    work.mkdir(parents=True)
    try:
        env = environment(work, bytecode_cache=not options.no_bytecode_cache)
        (work / "data").mkdir()
        run([*INTEGRITY, "init"], env, work)
        cache = "none (PYTHONDONTWRITEBYTECODE=1)" if options.no_bytecode_cache else "own bytecode cache"
        print(f"whole processes, median of {options.repeat}, empty store (init, SQLite), {cache}:", flush=True)
        load_before = os.getloadavg()[0]
        medians = whole_processes(work, env, options.repeat)
        cores = os.cpu_count() or 1
        print(f"  load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on {cores} cores"
              + (": wall times are mostly waiting for a core" if max(load_before, os.getloadavg()[0]) > cores else ""))
        anchor, anchor_cpu = medians["python -c pass"]
        for name, (seconds, cpu) in medians.items():
            if name == "python -c pass":
                print(f"  {name:22} wall {seconds:6.3f}s  cpu {cpu:6.3f}s  (anchor)")
                continue
            excess = seconds - anchor
            goal = ""
            if name in HELD_TO_GOAL:
                goal = f"  goal <= +{GOAL_SECONDS:.1f}s wall: {'met' if excess <= GOAL_SECONDS else 'NOT met'}"
            print(f"  {name:22} wall {seconds:6.3f}s  cpu {cpu:6.3f}s  +{excess:.3f}s wall "
                  f"(+{cpu - anchor_cpu:.3f}s cpu) over the anchor, {seconds / anchor:5.1f}x{goal}")
        print(f"in-process (CliRunner), median of {options.repeat} invocations after one warm-up:", flush=True)
        for name, seconds in in_process(env, options.repeat).items():
            print(f"  integrity {name:14} {seconds * 1000:7.1f} ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
