"""Backup speed and memory, side by side with the anchors, in one run.

    .venv/bin/python bench/backups.py                      # 1 GB database: 100,000 players x 65 tests
    .venv/bin/python bench/backups.py --players 20000      # a quicker look
    .venv/bin/python bench/backups.py --skip-postgres

Needs the sqlite3 and zstd command-line tools (apt-get install sqlite3 zstd) and, for
PostgreSQL, the server at 127.0.0.1:5432 (BENCH_PG_URL to change it).

Measured (median of --repeat runs after one warm-up of each side, ours and the anchors
alternating in every round so that a burst of load on the shared machine hits them all,
warm page cache), each against what a careful operator would chain (issue 20), with this
benchmark's earlier, weaker anchor on an extra line:
- SQLite create vs `sqlite3 game.db ".backup copy.db"; zstd -3 -T0 --rm copy.db; sync`
  (goal <= 1.2x; before: `zstd -3` single-threaded keeping the copy);
- quick verify vs `sha256sum data & zstd -t data` in parallel (goal <= 1.2x; before: the two
  in sequence), and the SHA-256 of the file alone by `sha256sum` and by hashlib;
- PostgreSQL create vs `pg_dump -Fc -Z0 | zstd -3 -T0` (pipefail) then `sync` (goal <= 1.1x;
  before: `pg_dump -Fc` with its default gzip);
- peak resident memory of create and quick verify, in child processes (goal < 200 MB).
The databases are built once with `simulate --seed 1` and kept under bench/.work/.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
sys.path.insert(0, str(HERE.parent))

from bench.common import build_sqlite_database, machine_line, peak_rss_mb, side_by_side  # noqa: E402


def run(command: list[str], **kwargs) -> None:
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, **kwargs)


def settings_for(url: str, repository: Path):
    from integrity.settings import resolve_settings

    settings = resolve_settings(environ={"HOME": str(WORK)}, cwd=WORK, database_url_option=url)
    return replace(settings, backups=replace(settings.backups, repository=repository))


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def ratio_line(what: str, ours: float, anchor: float, anchor_name: str, limit: float | None = None, tail: str = "") -> str:
    goal = "" if limit is None else f" (goal <= {limit:.2f}: {'met' if ours / anchor <= limit else 'MISSED'})"
    return f"{what:<18}ours {ours:6.2f}s   anchor ({anchor_name}) {anchor:6.2f}s   ratio {ours / anchor:4.2f}{goal}{tail}"


def cpu_line(times: dict[str, float], *names: str) -> str:
    """CPU seconds of each side on this host, and ours over each anchor's."""
    ours = times["ours cpu"]
    parts = [f"ours {ours:.2f}s"] + [f"{name} {times[name + ' cpu']:.2f}s (ratio {ours / times[name + ' cpu']:.2f})"
                                      for name in names]
    return "  CPU (this host, median): " + ", ".join(parts)


def shell(script: str, **kwargs) -> None:
    """A pipeline as an operator types it, failing when any part of it fails."""
    subprocess.run(["bash", "-o", "pipefail", "-e", "-c", script], check=True, stdout=subprocess.DEVNULL, **kwargs)


def phases_of(repository: Path) -> str:
    """The timings the newest backup's manifest records (they may overlap)."""
    from integrity.backups.repository import Repository

    manifest = Repository(repository).read_manifest(Repository(repository).backup_ids()[-1])
    return ", ".join(f"{name} {value:.2f}s" for name, value in manifest.timings.items())


def bench_sqlite(database: Path, repeat: int) -> None:
    from integrity import api
    from integrity.backups.repository import Repository
    from integrity.invocation import Invocation

    anchor_dir = WORK / "anchor"
    repository = WORK / "repository"
    copy = anchor_dir / "copy.db"

    def careful_create():
        # What a careful operator chains: an online copy, zstd on every core removing the
        # copy, and sync (our create fsyncs what it keeps; the anchor must pay for it too).
        fresh(anchor_dir)
        run(["sqlite3", str(database), f".backup {copy}"])
        run(["zstd", "-q", "-3", "-T0", "--rm", str(copy)])
        os.sync()

    def single_threaded_create():  # this benchmark's anchor before issue 20
        fresh(anchor_dir)
        run(["sqlite3", str(database), f".backup {copy}"])
        run(["zstd", "-q", "-3", str(copy)])
        os.sync()

    settings = settings_for(f"sqlite:///{database}", repository)

    def our_create():
        fresh(repository)
        api.backup_create(Invocation(settings, command="backup create"))

    times = side_by_side(our_create, careful_create, repeat, extra={"single": single_threaded_create})
    size = database.stat().st_size
    print(ratio_line("SQLite create", times["ours"], times["anchor"], ".backup; zstd -3 -T0 --rm; sync", 1.2,
                     f"   db {size / 1e9:.2f} GB"))
    print(ratio_line("", times["ours"], times["single"], "before issue 20: .backup; zstd -3 single-threaded; sync"))
    print(cpu_line(times, "anchor", "single"))
    print(f"  create phases of the last run (may overlap): {phases_of(repository)}", flush=True)

    backup_id = Repository(repository).backup_ids()[-1]
    data = repository / backup_id / "data.db.zst"
    verify = Invocation(settings, command="backup verify")
    times = side_by_side(
        lambda: api.backup_verify(verify, backup_id=backup_id),
        lambda: shell(f"sha256sum {data} & zstd -q -t {data}; wait $!"),  # hash and frame check side by side
        repeat,
        extra={"sequence": lambda: (run(["sha256sum", str(data)]), run(["zstd", "-q", "-t", str(data)])),
               "sha256sum": lambda: run(["sha256sum", str(data)]),
               "hashlib": lambda: _hashlib_sha256(data)},
    )
    print(ratio_line("quick verify", times["ours"], times["anchor"], "sha256sum & zstd -t, in parallel", 1.2,
                     f"   file {data.stat().st_size / 1e6:.0f} MB"))
    print(ratio_line("", times["ours"], times["sequence"], "before issue 20: sha256sum; zstd -t"))
    print(cpu_line(times, "anchor"))
    print(f"  SHA-256 of the file alone: sha256sum {times['sha256sum']:.2f}s, hashlib (OpenSSL) {times['hashlib']:.2f}s",
          flush=True)

    env = {**os.environ, "XDG_DATA_HOME": str(WORK / "xdg"), "INTEGRITY_BACKUPS__REPOSITORY": str(fresh(WORK / "repo-rss"))}
    integrity = [sys.executable, "-m", "integrity.cli", "--database-url", f"sqlite:///{database}"]
    create_mb = peak_rss_mb([*integrity, "backup", "create"], env)
    verify_mb = peak_rss_mb([*integrity, "backup", "verify", "--latest"], env)
    print(f"peak memory       create {create_mb:.0f} MB   quick verify {verify_mb:.0f} MB   (goal < 200 MB each)")


def _hashlib_sha256(path: Path) -> str:
    import hashlib

    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def bench_postgres(database: Path, repeat: int, pg_admin_url: str) -> None:
    import sqlalchemy as sa

    from game_core.db import create_engine
    from game_core.schema_state import upgrade_to_head
    from integrity import api
    from integrity.invocation import Invocation

    name = "bench_backups_" + database.stem.replace("-", "_")
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        exists = connection.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
    url = sa.make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
    if not exists:
        print(f"loading {database.name} into PostgreSQL database {name} (once)...", flush=True)
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine = create_engine(url)
        with engine.begin() as connection:
            upgrade_to_head(connection)
        engine.dispose()
        _copy_sqlite_into_postgres(database, url)
    admin.dispose()

    anchor_dir = WORK / "pg-anchor"
    repository = WORK / "pg-repository"
    target = sa.make_url(url)
    env = {**os.environ, "PGHOST": target.host or "", "PGPORT": str(target.port or 5432), "PGUSER": target.username or ""}

    def careful_dump():
        # pg_dump uncompressed into zstd on every core, every exit status checked, then sync.
        fresh(anchor_dir)
        shell(f"pg_dump -Fc -Z0 {name} | zstd -q -3 -T0 -o {anchor_dir / 'dump.zst'}", env=env)
        os.sync()

    def default_dump():  # this benchmark's anchor before issue 20: pg_dump's own gzip
        fresh(anchor_dir)
        run(["pg_dump", "-Fc", "-f", str(anchor_dir / "bare.dump"), name], env=env)
        os.sync()

    settings = settings_for(url, repository)

    def our_create():
        fresh(repository)
        api.backup_create(Invocation(settings, command="backup create"))

    times = side_by_side(our_create, careful_dump, repeat, extra={"default": default_dump})
    print(ratio_line("PostgreSQL create", times["ours"], times["anchor"], "pg_dump -Fc -Z0 | zstd -3 -T0; sync", 1.1))
    print(ratio_line("", times["ours"], times["default"], "before issue 20: pg_dump -Fc, its gzip; sync"))
    print(cpu_line(times, "anchor", "default"))
    print(f"  create phases of the last run (may overlap): {phases_of(repository)}", flush=True)


def _copy_sqlite_into_postgres(database: Path, url: str) -> None:
    import sqlite3

    import psycopg

    from game_core.schema import GAME_TABLES

    source = sqlite3.connect(database)
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as target:
        with target.cursor() as cursor:
            cursor.execute("DELETE FROM store_identity")
            for table in GAME_TABLES:
                columns = [row[1] for row in source.execute(f"PRAGMA table_info({table})")]
                with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in source.execute(f"SELECT {', '.join(columns)} FROM {table}"):
                        copy.write_row(row)
        target.commit()
        target.autocommit = True  # VACUUM refuses to run inside a transaction
        target.execute("VACUUM ANALYZE")
    source.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--players", type=int, default=100_000)
    parser.add_argument("--tests-per-player", type=int, default=65)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    print(machine_line())
    database = build_sqlite_database(WORK, args.players, args.tests_per_player)
    bench_sqlite(database, args.repeat)
    if not args.skip_postgres:
        bench_postgres(database, args.repeat, os.environ.get("BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    for leftover in ("anchor", "repository", "repo-rss", "pg-anchor", "pg-repository", "xdg"):
        shutil.rmtree(WORK / leftover, ignore_errors=True)


if __name__ == "__main__":
    main()
