"""What encryption at rest costs: backups with and without age encryption, in one run.

    .venv/bin/python bench/encryption.py                        # 5,000 players x 65 tests (about 65 MB), about 1 min
    .venv/bin/python bench/encryption.py --players 10000 --repeat 5 --deep   # the README's figures (131 MB), about 10 min
    .venv/bin/python bench/encryption.py --players 100000       # the 1 GB database

Measured on the same SQLite database (built once with `typing-game simulate --seed 1`,
kept under bench/.work/), median of --repeat runs after one warm-up, warm page cache,
through `integrity.api` as the CLI calls it; the anchor is the same command unencrypted:
- `backup create` (copy, compress, encrypt, fsync, read back)        goal <= 1.15x
- quick verify (encrypted: the ciphertext's SHA-256 only, no key)   goal <= 1.15x
- the restore stream alone (decrypt, decompress, both hashes, into a file: the part of a
  restore or deep verify that encryption changes)
- deep verify (restore into scratch, engine check, counts, audits)   goal <= 1.15x (with --deep)
- peak resident memory of encrypted create and deep verify in child processes, from
  wait4's rusage                                                     goal < 200 MB
Wall and CPU seconds (user + system of this process, every thread) are both printed: on a
machine shared with other work, CPU time is the steadier measure of what encryption adds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
sys.path.insert(0, str(HERE.parent))

from bench.common import build_sqlite_database, machine_line, peak_rss_mb  # noqa: E402


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def make_identity(directory: Path) -> tuple[str, Path]:
    from pyrage import x25519

    identity = x25519.Identity.generate()
    path = directory / "bench-identity.txt"
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(descriptor, f"{identity}\n".encode())
    os.close(descriptor)
    return str(identity.to_public()), path


def settings_for(url: str, repository: Path, *, recipient: str | None, identity: Path | None):
    from integrity.settings import resolve_settings

    settings = resolve_settings(environ={"HOME": str(WORK), "XDG_DATA_HOME": str(WORK / "xdg")}, cwd=WORK,
                                database_url_option=url)
    backups = replace(settings.backups, repository=repository,
                      encrypt_to=(recipient,) if recipient else (), identity_file=str(identity) if identity else "")
    return replace(settings, backups=backups, state=replace(settings.state, dir=WORK / "enc-state"))


def paired(times: dict, what: str, action, repeat: int) -> None:
    """The median of `repeat` runs of `action(kind)` for both kinds, alternating, after one
    warm-up run of each (page cache, imports): wall seconds, and CPU seconds of this
    process (every thread: what the work costs, less swayed by other load on the machine)."""
    import resource
    import statistics
    import time

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    runs: dict[str, list[tuple[float, float]]] = {"plain": [], "sealed": []}
    for kind in runs:
        action(kind)
    for _ in range(repeat):
        for kind in runs:
            started, used = time.perf_counter(), cpu()
            action(kind)
            runs[kind].append((time.perf_counter() - started, cpu() - used))
    for kind, values in runs.items():
        times[kind][what] = statistics.median(v[0] for v in values)
        times[kind][what + " cpu"] = statistics.median(v[1] for v in values)


def line(times: dict, what: str, label: str, goal: str) -> None:
    plain, sealed = times["plain"][what], times["sealed"][what]
    plain_cpu, sealed_cpu = times["plain"][what + " cpu"], times["sealed"][what + " cpu"]
    print(f"{label:<15} wall: unencrypted {plain:6.2f}s encrypted {sealed:6.2f}s ratio {sealed / plain:4.2f}   "
          f"cpu: {plain_cpu:6.2f}s {sealed_cpu:6.2f}s ratio {sealed_cpu / plain_cpu:4.2f}   ({goal})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--players", type=int, default=5_000)
    parser.add_argument("--tests-per-player", type=int, default=65)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--deep", action="store_true", help="time deep verify too (its audits dominate: minutes)")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    print(machine_line())
    database = build_sqlite_database(WORK, args.players, args.tests_per_player)
    url = f"sqlite:///{database}"
    print(f"database {database.name}: {database.stat().st_size / 1e6:.0f} MB", flush=True)

    from integrity import api
    from integrity.backups.archive import decompress_to
    from integrity.backups.repository import Repository
    from integrity.invocation import Invocation

    recipient, identity = make_identity(WORK)
    kinds = {
        "plain": settings_for(url, WORK / "enc-plain", recipient=None, identity=None),
        "sealed": settings_for(url, WORK / "enc-sealed", recipient=recipient, identity=identity),
    }
    fresh(WORK / "enc-state")
    times: dict[str, dict[str, float]] = {"plain": {}, "sealed": {}}

    def create(kind: str) -> None:
        fresh(kinds[kind].backups.repository)
        api.backup_create(Invocation(kinds[kind], command="backup create"))

    # Interleaved (plain, sealed, plain, ...), so that load from elsewhere on the machine
    # falls on both alike.
    paired(times, "create", create, args.repeat)
    repositories = {kind: Repository.of(settings) for kind, settings in kinds.items()}
    manifests = {kind: r.read_manifest(r.backup_ids()[-1]) for kind, r in repositories.items()}
    for kind, manifest in manifests.items():
        entry = manifest.files[0]
        print(f"  {kind}: {entry.name} {entry.size / 1e6:.1f} MB ({entry.raw_size / 1e6:.0f} MB raw)", flush=True)

    def quick(kind: str) -> None:
        api.backup_verify(Invocation(kinds[kind], command="backup verify"), backup_id=manifests[kind].id)

    def stream(kind: str) -> None:
        manifest, entry = manifests[kind], manifests[kind].files[0]
        target = WORK / "enc-restored.db"
        target.unlink(missing_ok=True)
        with target.open("xb") as handle:
            decompress_to(repositories[kind].file_of(manifest.id, entry.name), entry, handle.write,
                          backup_id=manifest.id)
        target.unlink()

    def deep(kind: str) -> None:
        api.backup_verify(Invocation(kinds[kind], command="backup verify --deep"), backup_id=manifests[kind].id,
                          deep=True)

    paired(times, "quick", quick, args.repeat)
    paired(times, "stream", stream, args.repeat)
    if args.deep:
        paired(times, "deep", deep, args.repeat)

    line(times, "create", "create", "goal <= 1.15")
    line(times, "quick", "quick verify", "goal <= 1.15; encrypted: the hash only")
    line(times, "stream", "restore stream", "decrypt + decompress + hashes alone")
    if args.deep:
        line(times, "deep", "deep verify", "goal <= 1.15")

    env = {**os.environ, "XDG_DATA_HOME": str(WORK / "xdg"),
           "INTEGRITY_BACKUPS__REPOSITORY": str(fresh(WORK / "enc-rss")),
           "INTEGRITY_STATE__DIR": str(WORK / "enc-state"),
           "INTEGRITY_BACKUPS__ENCRYPT_TO": recipient, "INTEGRITY_BACKUPS__IDENTITY_FILE": str(identity)}
    integrity = [sys.executable, "-m", "integrity.cli", "--database-url", url]
    create_mb = peak_rss_mb([*integrity, "backup", "create"], env)
    deep_mb = peak_rss_mb([*integrity, "backup", "verify", "--latest", "--deep"], env)
    print(f"peak memory      encrypted create {create_mb:.0f} MB   encrypted deep verify {deep_mb:.0f} MB   (goal < 200 MB each)")

    for leftover in ("enc-plain", "enc-sealed", "enc-rss", "enc-state", "xdg"):
        shutil.rmtree(WORK / leftover, ignore_errors=True)
    identity.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
