"""Recovery speed and memory, side by side with the anchors, in one run.

    .venv/bin/python bench/recovery.py                                # 1 GB database: 100,000 players x 65 tests
    .venv/bin/python bench/recovery.py --players 5000 --repeat 1      # a quick look
    .venv/bin/python bench/recovery.py --skip-postgres

Needs the sqlite3 and zstd command-line tools and, for PostgreSQL, the server at
127.0.0.1:5432 (BENCH_PG_URL to change it) with pg_restore on the PATH.

One backup of the benchmark database is taken with `api.backup_create` into a repository
under bench/.work/recovery-PID/; "live" is always a scratch copy of the benchmark database
(WAL mode, as the game keeps it), never the database itself. Measured, each against its
own anchor, as the median of --repeat runs after one warm-up of each side, ours and the
anchor alternating so that a burst of load on the shared machine hits both. The drills and
the diff with spread changes take minutes at 1 GB: they run --long-repeat times (default
1) without a warm-up run, the phases before them having read the same files (the backup's
data file, the live copy) into the page cache; that keeps the whole run under 25 minutes
(11 to 16 minutes measured, loading PostgreSQL included, on a 2-core machine).

- decompression: the restore's staging step (`sqlite_swap.stage`: `decompress_to`, both
  SHA-256 checked on the way, into a new staging file) vs `zstd -d -f data.db.zst -o out.db`
  (goal <= 1.2x). Neither side fsyncs; the previous run's output is removed untimed.
- swap: `sqlite_swap.swap` (the online backup API, one step, from the staging copy into
  the live file) vs `sqlite3 live.db ".restore copy.db"`, both followed by `sync` and
  both after an untimed `sync` (goal <= 1.5x).
- SQLite drill: `api.drill` on the live copy vs the manual steps it replaces, each timed
  in the same run: `zstd -d`, `sqlite3 copy.db "PRAGMA integrity_check"`,
  `sqlite3 copy.db "PRAGMA foreign_key_check"`, `checks.run_audits` on the copy (goal
  <= 1.5x). The drill also does what the manual steps do not (a hash check, counts and
  aggregates against the manifest, the compare with live, a swap rehearsal): its phases
  are printed (they may overlap), and its time less the two phases with no manual
  counterpart at all (the compare with live, the swap rehearsal) against the anchor.
- PostgreSQL drill: `api.drill` on the benchmark data loaded into PostgreSQL vs
  `pg_restore --no-owner --no-privileges --exit-on-error` (one job, as the drill's
  streamed restore) of the same archive (our backup's data file decompressed beforehand,
  untimed) into a freshly created database, plus `checks.run_audits` on it (goal <= 1.3x).
  The anchor's database is dropped untimed before each run and at the end. Phases as above.
- diff, on SQLite and on PostgreSQL (a TEMPLATE copy of the benchmark database as live,
  the benchmark database as the backup side): `diff_databases` between the live copy and
  a restored copy: identical, with
  1,000 changed results rows clustered (consecutive ids) and with 1,000 spread evenly
  over the table (every key range then differs; timed in the --long-repeat child runs
  that measure its memory). Rows per second counts the larger side of every table, summed (what
  `integrity diff` reports as rows compared) (goal >= 500,000 rows/s); peak memory in a
  child process (this file with --child), the kernel's high-water mark (goal < 300 MB).

The SQLite database is built once with `simulate --seed 1` and kept under bench/.work/.
The PostgreSQL data: bench/backups.py's database of the same SQLite file is reused when
its row counts match; otherwise it is loaded (bench/backups.py's COPY) into a database of
this benchmark, dropped at the end unless --keep-postgres. Everything else under
bench/.work/recovery-PID/ and every other database created is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
# Per run: another run of this benchmark on the shared machine must not remove our files.
ROOT = WORK / f"recovery-{os.getpid()}"
sys.path.insert(0, str(HERE.parent))

from bench.backups import _copy_sqlite_into_postgres, fresh, run, settings_for  # noqa: E402
from bench.common import build_sqlite_database, machine_line, median_seconds  # noqa: E402
from bench.common import side_by_side as common_side_by_side  # noqa: E402

CHANGED_ROWS = 1_000
ANCHOR_DATABASE = f"bench_recovery_anchor_{os.getpid()}"
DIFF_DATABASE = f"bench_recovery_diff_{os.getpid()}"


def goal(value: float, limit: float, *, at_most: bool = True) -> str:
    met = value <= limit if at_most else value >= limit
    return "met" if met else "MISSED"


def side_by_side(ours, anchor, repeat: int, *, prepare=lambda: None, warm_up: bool = True) -> tuple[float, float]:
    medians = common_side_by_side(ours, anchor, repeat, prepare=prepare, warm_up=warm_up)
    return medians["ours"], medians["anchor"]


def timed_steps(steps: dict, record: list[dict]):
    """An action running `steps` in order, appending each one's seconds to `record`."""
    def action():
        seconds = {}
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            seconds[name] = time.perf_counter() - started
        record.append(seconds)
    return action


def medians(records: list[dict], repeat: int) -> dict[str, float]:
    """Per key, the median over the timed runs (the last `repeat`, after any warm-up)."""
    timed = records[-repeat:]
    return {name: statistics.median(r[name] for r in timed) for name in timed[0]}


def phase_line(seconds: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.2f}s" for name, value in seconds.items())


def sqlite_settings(database: Path, repository: Path, state: Path):
    settings = settings_for(f"sqlite:///{database}", repository)
    return replace(settings, state=replace(settings.state, dir=state))


def scratch_copy(database: Path, destination: Path) -> Path:
    """A copy of the benchmark database through the backup API, in the game's WAL mode."""
    reader = sqlite3.connect(f"file:{quote(str(database))}?mode=ro", uri=True)
    writer = sqlite3.connect(destination)
    try:
        reader.backup(writer, pages=-1)
        writer.execute("PRAGMA journal_mode = WAL")
    finally:
        writer.close()
        reader.close()
    return destination


def audit(url: str) -> None:
    """The SQL audit (`checks.run_audits`), as bench/audits.py's "sql" action runs it."""
    import checks

    from game_core.db import create_engine

    engine = create_engine(url, read_only=True)
    try:
        with engine.connect() as connection:
            checks.run_audits(connection, sample_limit=5)
            connection.rollback()
    finally:
        engine.dispose()


def sqlite_cli(database: Path, sql: str, expected: str) -> None:
    output = subprocess.run(["sqlite3", str(database), sql], check=True, capture_output=True, text=True).stdout.strip()
    if output != expected:
        raise SystemExit(f"sqlite3 {database.name} {sql!r} printed {output[:200]!r}, expected {expected!r}")


# ---------------------------------------------------------------- SQLite: decompression, swap, drill


def bench_decompress(repository, manifest, state: Path, live: Path, repeat: int) -> None:
    from integrity.db import sqlite_swap

    data = repository.path_of(manifest.id) / manifest.files[0].name
    out = ROOT / "zstd-out.db"

    def prepare():
        out.unlink(missing_ok=True)
        for leftover in sqlite_swap.leftovers(state, live):
            sqlite_swap.remove(leftover)

    ours, anchor = side_by_side(
        lambda: sqlite_swap.stage(repository, manifest, state_dir=state, live_path=live),
        lambda: run(["zstd", "-q", "-d", "-f", str(data), "-o", str(out)]),
        repeat, prepare=prepare,
    )
    prepare()
    raw = manifest.files[0].raw_size
    print(f"SQLite decompress   ours {ours:6.2f}s ({raw / ours / 1e6:,.0f} MB/s)   anchor (zstd -d) {anchor:6.2f}s "
          f"({raw / anchor / 1e6:,.0f} MB/s)   ratio {ours / anchor:4.2f} (goal <= 1.20: {goal(ours / anchor, 1.2)})",
          flush=True)


def bench_swap(staging: Path, live: Path, busy_timeout_ms: int, repeat: int) -> None:
    from integrity.db import sqlite_swap

    def ours():
        sqlite_swap.swap(staging, live, busy_timeout_ms=busy_timeout_ms)
        os.sync()

    def anchor():
        run(["sqlite3", str(live), f".restore {staging}"])
        os.sync()

    ours_s, anchor_s = side_by_side(ours, anchor, repeat, prepare=os.sync)
    print(f"SQLite swap         ours {ours_s:6.2f}s   anchor (sqlite3 .restore + sync) {anchor_s:6.2f}s   "
          f"ratio {ours_s / anchor_s:4.2f} (goal <= 1.50: {goal(ours_s / anchor_s, 1.5)})   "
          f"live {live.stat().st_size / 1e9:.2f} GB", flush=True)


def bench_sqlite_drill(settings, repository, manifest, restored: Path, repeat: int) -> None:
    """`repeat`: the long repeat (no warm-up run)."""
    from integrity import api
    from integrity.invocation import Invocation

    data = repository.path_of(manifest.id) / manifest.files[0].name
    reports: list = []
    anchor_steps: list[dict] = []

    def ours():
        started = time.perf_counter()
        report = api.drill(Invocation(settings, command="drill"), backup_id=manifest.id)
        reports.append((time.perf_counter() - started, report))

    anchor = timed_steps({
        "zstd -d": lambda: run(["zstd", "-q", "-d", "-f", str(data), "-o", str(restored)]),
        "integrity_check": lambda: sqlite_cli(restored, "PRAGMA integrity_check", "ok"),
        "foreign_key_check": lambda: sqlite_cli(restored, "PRAGMA foreign_key_check", ""),
        "SQL audit": lambda: audit(str(restored)),
    }, anchor_steps)

    def prepare():
        restored.unlink(missing_ok=True)
        os.sync()

    ours_s, anchor_s = side_by_side(ours, anchor, repeat, prepare=prepare, warm_up=False)
    run(["zstd", "-q", "-d", "-f", str(data), "-o", str(restored)])  # left for the diff
    print_drill("SQLite", reports, repeat, ours_s, anchor_s, medians(anchor_steps, repeat),
                "zstd -d + integrity_check + foreign_key_check + SQL audit", 1.5,
                {"restore": ("zstd -d",), "deep checks": ("integrity_check", "foreign_key_check"),
                 "audits": ("SQL audit",)})


def print_drill(engine: str, reports: list, repeat: int, ours: float, anchor: float, steps: dict, what: str, limit: float,
                counterparts: dict[str, tuple[str, ...]] | None = None) -> None:
    """`reports`: (wall seconds, DrillReport) of every run; `counterparts`: per drill phase,
    the anchor steps that do its work by hand (each pair printed with its ratio)."""
    from integrity.recovery.drill import COMPARE, SWAP

    timed = reports[-repeat:]
    last = timed[-1][1]
    phases = {p.name: statistics.median(r.phase_seconds()[p.name] for _, r in timed) for p in last.phases}
    # The drill's wall time less the two phases the manual steps have no counterpart for.
    # (Phases may overlap, deep checks with audits, so they can add up to more than the wall.)
    restore_part = statistics.median(
        wall - r.phase_seconds().get(COMPARE, 0) - r.phase_seconds().get(SWAP, 0) for wall, r in timed
    )
    print(f"{engine} drill{' ' * (12 - len(engine))}ours {ours:6.2f}s   anchor ({what}) {anchor:6.2f}s   "
          f"ratio {ours / anchor:4.2f} (goal <= {limit:.2f}: {goal(ours / anchor, limit)})", flush=True)
    print(f"  drill phases (median; may overlap): {phase_line(phases)}")
    print(f"  drill less '{COMPARE}' and '{SWAP}' (no manual counterpart) {restore_part:.2f}s: "
          f"ratio {restore_part / anchor:4.2f} to the anchor")
    print(f"  anchor steps (median): {phase_line(steps)}")
    for phase, manual in (counterparts or {}).items():
        by_hand = sum(steps[name] for name in manual)
        print(f"  {phase} {phases.get(phase, 0):.2f}s vs {' + '.join(manual)} {by_hand:.2f}s: "
              f"ratio {phases.get(phase, 0) / by_hand:4.2f}")
    problems = "; ".join(last.problems) or "none"
    findings = "; ".join(last.findings) or "none"
    print(f"  last drill: exit {int(last.exit_code)}, audit {last.audit}, predicted full restore "
          f"{last.predicted_seconds or 0:.1f}s, problems: {problems}, findings: {findings}", flush=True)


# ---------------------------------------------------------------- diff


def diff_rows(live: str, backup: str) -> tuple[int, dict[str, int]]:
    """One diff of the two databases: rows compared (the larger side, summed) and the
    differences found per table."""
    from game_core.db import create_engine
    from integrity.tablediff.backup_live import diff_databases

    live_engine = create_engine(live, read_only=True)
    backup_engine = create_engine(backup, read_only=True)
    try:
        with live_engine.connect() as live_connection, backup_engine.connect() as backup_connection:
            diffs = diff_databases(live_connection, backup_connection)
    finally:
        live_engine.dispose()
        backup_engine.dispose()
    rows = sum(max(d.live_rows, d.backup_rows) for d in diffs)
    return rows, {d.table: d.differing_rows for d in diffs if d.differing_rows}


def _proc_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def child(kind: str, live: str, backup: str) -> None:
    """One diff in this fresh process; print seconds, baseline and peak memory (as bench/audits.py)."""
    if kind != "diff":
        raise SystemExit(f"unknown child {kind}")
    import integrity.tablediff.backup_live  # noqa: F401
    from game_core.db import create_engine

    for url in (live, backup):
        engine = create_engine(url, read_only=True)
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT count(*) FROM players").scalar_one()
        engine.dispose()
    baseline = _proc_kb("VmRSS")
    started = time.perf_counter()
    rows, found = diff_rows(live, backup)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "rows": rows, "found": found,
                      "baseline_mb": baseline / 1024, "peak_mb": _proc_kb("VmHWM") / 1024}))


def measure_child(live: Path, backup: Path) -> dict:
    output = subprocess.run([sys.executable, __file__, "--child", "diff", str(live), str(backup)],
                            check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def plant_changes(url: str, *, clustered: bool, delta: int) -> int:
    """Change `duration_ms` by `delta` in CHANGED_ROWS results rows (reverted with -delta),
    on either engine: consecutive ids from the middle of the table, or every n-th id."""
    import sqlalchemy as sa

    from game_core.db import create_engine

    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            low, high = connection.execute(sa.text("SELECT min(id), max(id) FROM results")).one()
            if clustered:
                start = (low + high) // 2
                where, params = "id BETWEEN :a AND :b", {"a": start, "b": start + CHANGED_ROWS - 1}
            else:
                step = max((high - low + 1) // CHANGED_ROWS, 1)
                where = "id IN (SELECT id FROM results WHERE (id - :low) % :step = 0 LIMIT :n)"
                params = {"low": low, "step": step, "n": CHANGED_ROWS}
            changed = connection.execute(
                sa.text(f"UPDATE results SET duration_ms = duration_ms + :delta WHERE {where}"), {"delta": delta, **params}
            ).rowcount
        if engine.dialect.name == "sqlite":
            # On the driver's connection: SQLite refuses a checkpoint inside the BEGIN
            # that an engine's connection starts.
            raw = engine.raw_connection()
            try:
                raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                raw.close()
    finally:
        engine.dispose()
    return changed


def bench_diff(engine: str, live: str, backup: str, repeat: int, long_repeat: int) -> None:
    """`live` and `backup`: SQLite paths or database URLs; changes are planted in `live`."""
    found: dict = {}

    def action():
        rows, differences = diff_rows(live, backup)
        found.update(rows=rows, differences=differences)

    variants = (("identical", None), ("1,000 changed, clustered", True), ("1,000 changed, spread", False))
    for name, clustered in variants:
        if clustered is not None:
            planted = plant_changes(live, clustered=clustered, delta=1)
        if clustered is False:
            # Every key range differs: the slowest case. Timed in the child runs themselves.
            runs = [measure_child(live, backup) for _ in range(long_repeat)]
            seconds = statistics.median(r["seconds"] for r in runs)
            memory = max(runs, key=lambda r: r["peak_mb"])
            found.update(rows=runs[-1]["rows"], differences=runs[-1]["found"])
            how = f"median of {long_repeat} child run(s)"
        else:
            seconds = median_seconds(action, repeat)
            memory = measure_child(live, backup)
            how = f"median of {repeat}"
        if clustered is not None:
            plant_changes(live, clustered=clustered, delta=-1)
            expected = {"results": planted}
        else:
            expected = {}
        check = "as planted" if found["differences"] == expected else f"EXPECTED {expected}"
        rate = found["rows"] / seconds
        print(f"{engine} diff {name:25} {seconds:6.2f}s ({how})   {found['rows']:,} rows   {rate:,.0f} rows/s "
              f"(goal >= 500,000: {goal(rate, 500_000, at_most=False)})   found {found['differences'] or 'none'} "
              f"({check})   peak {memory['peak_mb']:.0f} MB (goal < 300: {goal(memory['peak_mb'], 300)}), "
              f"baseline {memory['baseline_mb']:.0f} MB", flush=True)


def bench_postgres_diff(url: str, admin_url: str, repeat: int, long_repeat: int) -> None:
    """The diff on PostgreSQL: a copy of the benchmark database (CREATE DATABASE ... TEMPLATE,
    untimed) is "live" and takes the planted changes; the benchmark database is the backup
    side and is never changed."""
    import sqlalchemy as sa

    source = sa.make_url(url)
    copy_url = source.set(database=DIFF_DATABASE).render_as_string(hide_password=False)
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{DIFF_DATABASE}" WITH (FORCE)'))
            connection.execute(sa.text(f'CREATE DATABASE "{DIFF_DATABASE}" TEMPLATE "{source.database}"'))
    finally:
        admin.dispose()
    try:
        bench_diff("PostgreSQL", copy_url, url, repeat, long_repeat)
    finally:
        drop_database(admin_url, DIFF_DATABASE)


# ---------------------------------------------------------------- PostgreSQL


def game_counts_sqlite(database: Path) -> dict[str, int]:
    from game_core.schema import GAME_TABLES

    connection = sqlite3.connect(f"file:{quote(str(database))}?mode=ro", uri=True)
    try:
        return {t: connection.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in GAME_TABLES if t != "store_identity"}
    finally:
        connection.close()


def game_counts_postgres(url: str) -> dict[str, int] | None:
    import sqlalchemy as sa

    from game_core.schema import GAME_TABLES

    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            present = set(sa.inspect(connection).get_table_names())
            return {t: connection.execute(sa.text(f'SELECT count(*) FROM "{t}"')).scalar_one()
                    for t in GAME_TABLES if t != "store_identity" and t in present}
    except sa.exc.DBAPIError:
        return None
    finally:
        engine.dispose()


def postgres_source(database: Path, admin_url: str, keep: bool) -> tuple[str, str | None]:
    """The URL of a PostgreSQL database holding `database`'s rows, and its name when this
    run created it (to drop at the end). bench/backups.py's database, or one an earlier
    run kept (--keep-postgres), is reused, never changed; otherwise the rows are loaded
    into a database of this run (of this process unless kept, so that concurrent runs
    never drop each other's)."""
    import sqlalchemy as sa

    from game_core.db import create_engine
    from game_core.schema_state import upgrade_to_head

    expected = game_counts_sqlite(database)
    stem = database.stem.replace("-", "_")
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        for name in ("bench_backups_" + stem, "bench_recovery_" + stem):
            url = sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
            with admin.connect() as connection:
                exists = connection.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
            if exists and game_counts_postgres(url) == expected:
                print(f"reusing PostgreSQL database {name} (row counts match)", flush=True)
                return url, None
        # Anything already under our name is a leftover of an interrupted run.
        name = "bench_recovery_" + stem + ("" if keep else f"_{os.getpid()}")
        url = sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        print(f"loading {database.name} into PostgreSQL database {name}...", flush=True)
        started = time.perf_counter()
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine = create_engine(url)
        with engine.begin() as connection:
            upgrade_to_head(connection)
        engine.dispose()
        _copy_sqlite_into_postgres(database, url)
        print(f"loaded in {time.perf_counter() - started:.0f}s", flush=True)
        return url, name
    finally:
        admin.dispose()


def drop_database(admin_url: str, name: str) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def bench_postgres_drill(url: str, admin_url: str, repeat: int) -> None:
    """`repeat`: the long repeat (no warm-up run)."""
    import sqlalchemy as sa

    from integrity import api
    from integrity.backups.repository import Repository
    from integrity.invocation import Invocation

    settings = settings_for(url, ROOT / "pg-repository")
    settings = replace(settings, state=replace(settings.state, dir=ROOT / "state"))
    Repository(settings.backups.repository).ensure()  # as `integrity init` does
    started = time.perf_counter()
    created = api.backup_create(Invocation(settings, command="backup create"))
    manifest = created.manifest
    print(f"PostgreSQL backup   {time.perf_counter() - started:6.2f}s   {manifest.files[0].size / 1e6:,.0f} MB "
          f"(raw {manifest.files[0].raw_size / 1e6:,.0f} MB)", flush=True)
    dump = ROOT / "anchor.dump"
    run(["zstd", "-q", "-d", "-f", str(Path(created.path) / manifest.files[0].name), "-o", str(dump)])

    target = sa.make_url(url)
    env = {**os.environ, "PGHOST": target.host or "", "PGPORT": str(target.port or 5432), "PGUSER": target.username or ""}
    anchor_url = target.set(database=ANCHOR_DATABASE).render_as_string(hide_password=False)

    def create_database():
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.execute(sa.text(f'CREATE DATABASE "{ANCHOR_DATABASE}"'))
        finally:
            admin.dispose()

    reports: list = []
    anchor_steps: list[dict] = []
    anchor = timed_steps({
        "create database": create_database,
        "pg_restore": lambda: run(["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error",
                                   f"--dbname={ANCHOR_DATABASE}", str(dump)], env=env),
        "SQL audit": lambda: audit(anchor_url),
    }, anchor_steps)

    def prepare():
        drop_database(admin_url, ANCHOR_DATABASE)

    try:
        def ours():
            started = time.perf_counter()
            report = api.drill(Invocation(settings, command="drill"), backup_id=manifest.id)
            reports.append((time.perf_counter() - started, report))

        ours_s, anchor_s = side_by_side(ours, anchor, repeat, prepare=prepare, warm_up=False)
    finally:
        prepare()
        dump.unlink(missing_ok=True)
    print_drill("PostgreSQL", reports, repeat, ours_s, anchor_s, medians(anchor_steps, repeat),
                "create database + pg_restore + SQL audit", 1.3,
                {"restore": ("create database", "pg_restore"), "audits": ("SQL audit",)})


# ---------------------------------------------------------------- the run


def bench(database: Path, repeat: int, long_repeat: int, skip_postgres: bool, keep_postgres: bool, admin_url: str) -> None:
    from integrity import api
    from integrity.backups.repository import Repository
    from integrity.invocation import Invocation

    repository_path, state = ROOT / "repository", ROOT / "state"
    live = scratch_copy(database, ROOT / "live.db")
    settings = sqlite_settings(database, repository_path, state)
    repository = Repository(repository_path)
    repository.ensure()  # as `integrity init` does: backup create never creates a repository
    started = time.perf_counter()
    manifest = api.backup_create(Invocation(settings, command="backup create")).manifest
    entry = manifest.files[0]
    print(f"database {database.name}: {manifest.row_counts().get('results', 0):,} results, {entry.raw_size / 1e9:.2f} GB; "
          f"backup {time.perf_counter() - started:.1f}s, {entry.size / 1e6:,.0f} MB", flush=True)

    bench_decompress(repository, manifest, state, live, repeat)
    # The staging copy the swap copies from: exactly what the restore stages.
    from integrity.db import sqlite_swap

    staging = sqlite_swap.stage(repository, manifest, state_dir=state, live_path=live)
    try:
        bench_swap(staging, live, settings.database.busy_timeout_ms, repeat)
    finally:
        sqlite_swap.remove(staging)

    restored = ROOT / "restored.db"
    bench_sqlite_drill(sqlite_settings(live, repository_path, state), repository, manifest, restored, long_repeat)
    bench_diff("SQLite", str(live), str(restored), repeat, long_repeat)
    for path in (live, restored):
        sqlite_swap.remove(path)

    if skip_postgres:
        return
    url, created = postgres_source(database, admin_url, keep_postgres)
    try:
        bench_postgres_drill(url, admin_url, long_repeat)
        bench_postgres_diff(url, admin_url, repeat, long_repeat)
    finally:
        if created and not keep_postgres:
            drop_database(admin_url, created)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--players", type=int, default=100_000)
    parser.add_argument("--tests-per-player", type=int, default=65)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--long-repeat", type=int, default=1,
                        help="timed runs of the drills and the spread diff (no warm-up run)")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--keep-postgres", action="store_true",
                        help="keep the PostgreSQL copy of the data this run loads, for the next run")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "LIVE", "BACKUP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    started = time.perf_counter()
    print(machine_line())
    WORK.mkdir(exist_ok=True)
    database = build_sqlite_database(WORK, args.players, args.tests_per_player)
    fresh(ROOT)
    try:
        bench(database, args.repeat, args.long_repeat, args.skip_postgres, args.keep_postgres,
              os.environ.get("BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    finally:
        shutil.rmtree(ROOT, ignore_errors=True)
    print(f"total {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
