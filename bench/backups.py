"""Backup speed and memory, side by side with the anchors, in one run.

    .venv/bin/python bench/backups.py                      # 1 GB database: 100,000 players x 65 tests
    .venv/bin/python bench/backups.py --players 20000      # a quicker look
    .venv/bin/python bench/backups.py --skip-postgres

Needs the sqlite3 and zstd command-line tools (apt-get install sqlite3 zstd) and, for
PostgreSQL, the server at 127.0.0.1:5432 (BENCH_PG_URL to change it).

Measured (median of --repeat runs after one warm-up, warm page cache):
- SQLite create vs `sqlite3 game.db ".backup copy.db"` then `zstd copy.db` (goal <= 1.3x);
- quick verify vs `sha256sum` plus `zstd -t` of the same file (goal <= 1.2x);
- PostgreSQL create vs a bare `pg_dump -Fc` of the same database (goal <= 1.1x);
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

from bench.common import build_sqlite_database, machine_line, median_seconds, peak_rss_mb  # noqa: E402


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


def bench_sqlite(database: Path, repeat: int) -> None:
    from integrity import api
    from integrity.backups.repository import Repository
    from integrity.invocation import Invocation

    anchor_dir = WORK / "anchor"
    repository = WORK / "repository"

    def anchor_create():
        fresh(anchor_dir)
        run(["sqlite3", str(database), f".backup {anchor_dir / 'copy.db'}"])
        run(["zstd", "-q", "-3", str(anchor_dir / "copy.db")])
        os.sync()  # our create fsyncs what it writes; the anchor must pay for it too

    settings = settings_for(f"sqlite:///{database}", repository)

    def our_create():
        fresh(repository)
        api.backup_create(Invocation(settings, command="backup create"))

    anchor = median_seconds(anchor_create, repeat)
    ours = median_seconds(our_create, repeat)
    size = database.stat().st_size
    print(f"SQLite create   ours {ours:6.2f}s   anchor (.backup + zstd + sync) {anchor:6.2f}s   ratio {ours / anchor:4.2f} (goal <= 1.30)   db {size / 1e9:.2f} GB")

    backup_id = Repository(repository).backup_ids()[-1]
    data = repository / backup_id / "data.db.zst"
    anchor = median_seconds(lambda: (run(["sha256sum", str(data)]), run(["zstd", "-q", "-t", str(data)])), repeat)
    verify = Invocation(settings, command="backup verify")
    ours = median_seconds(lambda: api.backup_verify(verify, backup_id=backup_id), repeat)
    print(f"quick verify    ours {ours:6.2f}s   anchor (sha256sum + zstd -t)   {anchor:6.2f}s   ratio {ours / anchor:4.2f} (goal <= 1.20)   file {data.stat().st_size / 1e6:.0f} MB")

    env = {**os.environ, "XDG_DATA_HOME": str(WORK / "xdg"), "INTEGRITY_BACKUPS__REPOSITORY": str(fresh(WORK / "repo-rss"))}
    integrity = [sys.executable, "-m", "integrity.cli", "--database-url", f"sqlite:///{database}"]
    create_mb = peak_rss_mb([*integrity, "backup", "create"], env)
    verify_mb = peak_rss_mb([*integrity, "backup", "verify", "--latest"], env)
    print(f"peak memory     create {create_mb:.0f} MB   quick verify {verify_mb:.0f} MB   (goal < 200 MB each)")


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

    def anchor_dump():
        fresh(anchor_dir)
        run(["pg_dump", "-Fc", "-f", str(anchor_dir / "bare.dump"), name], env=env)
        os.sync()

    settings = settings_for(url, repository)

    def our_create():
        fresh(repository)
        api.backup_create(Invocation(settings, command="backup create"))

    anchor = median_seconds(anchor_dump, repeat)
    ours = median_seconds(our_create, repeat)
    print(f"PostgreSQL create  ours {ours:6.2f}s   anchor (pg_dump -Fc) {anchor:6.2f}s   ratio {ours / anchor:4.2f} (goal <= 1.10)")


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
