"""The ledger: one row per `integrity` run, kept outside the database it guards.

A restore must not erase the record of the restore, so the ledger lives in the state
directory (SQLite) or in `[state] ledger_url` (PostgreSQL, shared by several hosts).
Its layout is versioned in `ledger_meta`; changes are additive steps in `_UPGRADES`,
so a newer tool upgrades an older ledger in place and an older tool can still write a
newer one (it warns, and ignores the columns it does not know).

A run is `running` while its process lives. A process killed (SIGKILL, the OOM killer, a
host that went down) cannot record its end, so every open of the ledger looks at the
`running` rows and marks those whose process is gone `killed` (`reap_killed`): the same
host checks the pid (and the process's start time, so a reused pid does not pass for it);
on a PostgreSQL ledger any host checks the advisory lock the run holds while it lives.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from integrity import __version__
from integrity.errors import LedgerUnavailable

log = logging.getLogger(__name__)

LEDGER_SCHEMA_VERSION = 6
RUNNING = "running"
KILLED = "killed"

_metadata = sa.MetaData()
ledger_meta = sa.Table(
    "ledger_meta",
    _metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


def _run_columns_v1() -> list[sa.Column]:
    return [
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("command", sa.String(128), nullable=False, index=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("exit_code", sa.Integer),
        sa.Column("summary", sa.Text, nullable=False, default="{}"),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("tool_version", sa.String(32), nullable=False),
    ]


# `runs` as layout 1 created it, frozen: later layouts add to it only through their step.
_runs_v1 = sa.Table("runs", sa.MetaData(), *_run_columns_v1())
runs = sa.Table(
    "runs",
    _metadata,
    *_run_columns_v1(),
    # Layout 5 (see _create_v5).
    sa.Column("process", sa.String(96)),
    sa.Column("run_lock", sa.BigInteger),
)


def _create_v1(connection: sa.Connection) -> None:
    _runs_v1.metadata.create_all(connection, tables=[_runs_v1])


# Layout 2: audit history (integrity.audit_history reads and writes it). One row per
# audit run, linked to its ledger run, and one row per rule it ran. `rules` is NULL for
# a whole-catalogue run: only those give watermarks to `audit --since-last`.
audit_runs = sa.Table(
    "audit_runs",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), index=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("seconds", sa.Float, nullable=False),
    sa.Column("engine", sa.String(16), nullable=False),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("rules", sa.Text),
    sa.Column("since", sa.Text),
    sa.Column("watermarks", sa.Text, nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("error_rules", sa.Integer, nullable=False),
    sa.Column("warn_rules", sa.Integer, nullable=False),
    sa.Column("day", sa.String(10)),
    sa.Column("mean_wpm_day", sa.Float),
    sa.Column("rows_per_day", sa.BigInteger),
    sa.Column("drift", sa.Text, nullable=False),
)
audit_rule_counts = sa.Table(
    "audit_rule_counts",
    _metadata,
    sa.Column("audit_id", sa.Integer, sa.ForeignKey("audit_runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("rule", sa.String(128), primary_key=True, index=True),
    sa.Column("severity", sa.String(8), nullable=False),
    sa.Column("failing_rows", sa.BigInteger, nullable=False),
    sa.Column("checked_rows", sa.BigInteger, nullable=False),
)


def _create_v2(connection: sa.Connection) -> None:
    _metadata.create_all(connection, tables=[audit_runs, audit_rule_counts])


# Layout 3: the scheduler (integrity.scheduler). `claims`: one row per (job, fire time),
# whoever inserts it first runs that fire, so several scheduler hosts sharing a PostgreSQL
# ledger run each fire once. `schedule_events`: fires that did not become runs (skipped
# because the previous run still ran or another host claimed it, missed while no
# scheduler was up); they stay out of `runs`, which holds only what really ran, so that
# job health and metrics count runs the same for cron and for the daemon.
# `heartbeats`: one row per scheduler process, touched every few seconds.
claims = sa.Table(
    "claims",
    _metadata,
    sa.Column("job", sa.String(32), primary_key=True),
    sa.Column("fire_time", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
)
schedule_events = sa.Table(
    "schedule_events",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job", sa.String(32), nullable=False, index=True),
    sa.Column("fire_time", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),  # "skipped" or "missed"
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)
heartbeats = sa.Table(
    "heartbeats",
    _metadata,
    sa.Column("host", sa.String(255), primary_key=True),
    sa.Column("pid", sa.Integer, primary_key=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("state", sa.String(16), nullable=False),  # "running" or "stopped"
)


def _create_v3(connection: sa.Connection) -> None:
    _metadata.create_all(connection, tables=[claims, schedule_events, heartbeats])
    # The metrics and job health read each command's newest runs after every command:
    # without this index that is a scan of the whole ledger each time.
    connection.execute(sa.text("CREATE INDEX IF NOT EXISTS runs_command_started ON runs (command, started_at)"))


# Layout 4: migration dry runs (integrity.migrate.records). One row per dry run that got
# as far as a verdict, with the file hash of every revision it ran: `migrate apply` only
# applies revisions that passed a dry run of this store with exactly these files.
migration_dry_runs = sa.Table(
    "migration_dry_runs",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), index=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("store_identity", sa.String(36)),
    sa.Column("engine", sa.String(16), nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("start_revision", sa.String(64)),
    sa.Column("target_revision", sa.String(64), nullable=False),
    sa.Column("revisions", sa.Text, nullable=False),  # JSON [{"id", "sha256"}] in upgrade order
    sa.Column("passed", sa.Boolean, nullable=False),
    sa.Column("errors", sa.Integer, nullable=False),
    sa.Column("warnings", sa.Integer, nullable=False),
)


def _create_v4(connection: sa.Connection) -> None:
    _metadata.create_all(connection, tables=[migration_dry_runs])


# Layout 5: how the next run tells a killed run from a running one. `process` is
# "<boot id>:<start time in clock ticks>" of the run's process on Linux (NULL elsewhere):
# with the pid and host it names one process, so neither a pid reused after the run died
# nor a reboot passes for it. `run_lock` is the second key of the session advisory lock
# (RUN_LOCK_CLASS, run_lock) the run holds in a PostgreSQL ledger while it lives (NULL on
# SQLite): free means its process is gone, which any scheduler host can test. The partial
# index keeps the check of `running` rows at every open cheap on a ledger of years.
def _create_v5(connection: sa.Connection) -> None:
    present = {column["name"] for column in sa.inspect(connection).get_columns("runs")}
    for name, sql_type in (("process", "VARCHAR(96)"), ("run_lock", "BIGINT")):
        if name not in present:  # a concurrent upgrade on PostgreSQL may have added it
            connection.execute(sa.text(f"ALTER TABLE runs ADD COLUMN {name} {sql_type}"))
    connection.execute(sa.text(f"CREATE INDEX IF NOT EXISTS runs_running ON runs (id) WHERE outcome = '{RUNNING}'"))


# Layout 6: notifications (integrity.notify). One row per condition ever notified
# ("job_failed:backup", "backup_suspect:<id>", "drill_failed", "audit_dirty"): `active` is
# the state last notified, so a condition notifies once when it starts and once when it
# clears, however many runs see it in between. `last_error` keeps the last delivery that
# did not reach every target (target URLs masked), for `integrity notify status`.
notify_conditions = sa.Table(
    "notify_conditions",
    _metadata,
    sa.Column("key", sa.String(160), primary_key=True),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.String(32)),
    sa.Column("last_error", sa.Text),
    sa.Column("error_at", sa.DateTime(timezone=True)),
)


def _create_v6(connection: sa.Connection) -> None:
    _metadata.create_all(connection, tables=[notify_conditions])


# Each step takes the ledger from version N-1 to N; only ever append.
_UPGRADES = {1: _create_v1, 2: _create_v2, 3: _create_v3, 4: _create_v4, 5: _create_v5, 6: _create_v6}

# The first key of the two-key advisory lock a run holds in a PostgreSQL ledger ("LEDG");
# scratch claims use another class (integrity.db.claims.CLAIM_LOCK_CLASS).
RUN_LOCK_CLASS = 0x4C454447


@dataclass(frozen=True)
class RunRecord:
    id: str
    command: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    exit_code: int | None
    summary: dict[str, Any]
    host: str
    pid: int
    tool_version: str
    process: str | None = None
    run_lock: int | None = None

    @property
    def duration_seconds(self) -> float | None:
        return (self.finished_at - self.started_at).total_seconds() if self.finished_at else None


def process_token(pid: int) -> str | None:
    """'<boot id>:<start time>' of a live process (Linux), else None: with the pid and the
    host it names exactly one process, across pid reuse and reboots. A zombie (killed, not
    yet reaped by its parent) has no token: it is gone."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2, the command name, may hold spaces and ')': count the fields after its end.
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return f"{boot}:{fields[19]}"  # field 22, starttime, in clock ticks since boot


def process_gone(pid: int, token: str | None) -> bool:
    """Whether the process that recorded (pid, token) on this host has ended."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, and another user's: still compare its start time
    if token is None:
        return False  # recorded where /proc was not readable: a live pid is all we know
    current = process_token(pid)
    return current != token and (current is not None or Path("/proc/self/stat").exists())


def _require_writable(path: Path) -> None:
    """A SQLite ledger the tool cannot write is refused before SQLite opens it, naming the
    file and the fix. Opened anyway, SQLite falls back to reading it and creates the -wal
    and -shm files with the database file's (read-only) mode, so that after ledger.db is
    fixed the next runs still fail, on a -shm file nobody was told about."""
    for candidate in (path.parent, path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if candidate.exists() and not os.access(candidate, os.W_OK):
            what = "the state directory" if candidate == path.parent else "the ledger file"
            raise LedgerUnavailable(
                f"{what} {candidate} is not writable; make it writable by the user running integrity "
                f"(chmod u+w {candidate}), or set [state] dir (INTEGRITY_STATE__DIR) to a writable directory"
            )


def outcome_for(exit_code: int) -> str:
    return {0: "ok", 3: "problems", 4: "precondition", 5: "failed", 130: "interrupted"}.get(exit_code, "error")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


class Ledger:
    """Record and read runs. Open it with `Ledger.open(state_dir, ledger_url)`."""

    def __init__(self, engine: Engine, location: str):
        self.engine = engine
        self.location = location
        # The connection holding this process's run lock (a PostgreSQL ledger), by run id.
        self._run_locks: dict[str, sa.Connection] = {}

    @classmethod
    def open(cls, state_dir: Path, ledger_url: str = "") -> "Ledger":
        from game_core.db import parse_database_url
        from game_core.errors import Failure
        from integrity.db.connect import ledger_engine

        try:
            if ledger_url:
                target = parse_database_url(ledger_url)
                engine = ledger_engine(target, create_missing=False)
                location = target.masked
            else:
                state_dir.mkdir(parents=True, exist_ok=True)
                path = state_dir / "ledger.db"
                _require_writable(path)
                engine = ledger_engine(parse_database_url(str(path)), create_missing=True)
                location = str(path)
        except OSError as exc:
            raise LedgerUnavailable(
                f"cannot create the state directory {state_dir}: {exc.strerror}; set [state] dir "
                "(or INTEGRITY_STATE__DIR) to a writable directory"
            ) from None
        except LedgerUnavailable:
            raise  # names its file and its fix already
        except Failure as exc:
            setting = (
                "[state] ledger_url" if ledger_url
                else f"that {state_dir} is writable, or set [state] dir (INTEGRITY_STATE__DIR) to another directory"
            )
            cause = getattr(exc, "cause", str(exc))  # without the hint about --database-url
            raise LedgerUnavailable(f"cannot open the ledger: {cause}; check {setting}") from None
        ledger = cls(engine, location)
        ledger._upgrade()
        ledger.reap_killed()
        return ledger

    def close(self) -> None:
        for run_id in list(self._run_locks):
            self._release_run_lock(run_id)
        self.engine.dispose()

    @property
    def _postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def _upgrade(self) -> None:
        if self._layout_is_current():
            return
        try:
            with self.engine.begin() as connection:
                _metadata.create_all(connection, tables=[ledger_meta])
                version = connection.execute(
                    sa.select(ledger_meta.c.value).where(ledger_meta.c.key == "schema_version")
                ).scalar()
                version = int(version) if version is not None else 0
                if version > LEDGER_SCHEMA_VERSION:
                    log.warning(
                        "ledger %s was written by a newer tool (layout %s, this tool knows %s)",
                        self.location, version, LEDGER_SCHEMA_VERSION,
                    )
                    return
                for step in range(version + 1, LEDGER_SCHEMA_VERSION + 1):
                    _UPGRADES[step](connection)
                if version != LEDGER_SCHEMA_VERSION:
                    values = {"key": "schema_version", "value": str(LEDGER_SCHEMA_VERSION)}
                    if version == 0:
                        connection.execute(ledger_meta.insert().values(**values))
                    else:
                        connection.execute(
                            ledger_meta.update().where(ledger_meta.c.key == "schema_version").values(value=values["value"])
                        )
        except sa.exc.DBAPIError as exc:
            raise self._unwritable(exc) from None

    def _layout_is_current(self) -> bool:
        """Whether the ledger already has this tool's layout, read without a write
        transaction: every run opens the ledger, and on all but the first the upgrade has
        nothing to do (a missing table or an unreadable file: False, the upgrade decides)."""
        try:
            with self.engine.connect() as connection:
                version = connection.execute(
                    sa.select(ledger_meta.c.value).where(ledger_meta.c.key == "schema_version")
                ).scalar()
        except sa.exc.DBAPIError:
            return False
        return version is not None and version == str(LEDGER_SCHEMA_VERSION)

    def _unwritable(self, exc: sa.exc.DBAPIError) -> LedgerUnavailable:
        """A write the ledger refused, as exit 4 naming the file to fix (a SQLite ledger's
        -wal or -shm file or its directory may be the read-only one, not ledger.db)."""
        from integrity.db.sql import error_reason

        reason = error_reason(exc)
        if not self._postgres:
            path = Path(self.location)
            try:
                _require_writable(path)
            except LedgerUnavailable as precise:
                return precise
            return LedgerUnavailable(
                f"cannot write the ledger {path}: {reason}; make it and its directory writable by the user running "
                "integrity, or set [state] dir (INTEGRITY_STATE__DIR) to a writable directory"
            )
        return LedgerUnavailable(f"cannot write the ledger at {self.location}: {reason}; check [state] ledger_url")

    def schema_version(self) -> int:
        with self.engine.connect() as connection:
            value = connection.execute(
                sa.select(ledger_meta.c.value).where(ledger_meta.c.key == "schema_version")
            ).scalar()
        return int(value or 0)

    def start(self, command: str) -> str:
        run_id = uuid.uuid4().hex
        run_lock = None
        if self._postgres:  # before the row exists, so that no one ever sees it running and unlocked
            while (run_lock := self._take_run_lock(run_id)) is None:
                run_id = uuid.uuid4().hex  # the 32-bit key of a live run: another id
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    runs.insert().values(
                        id=run_id,
                        command=command,
                        started_at=utc_now(),
                        outcome=RUNNING,
                        summary="{}",
                        host=socket.gethostname(),
                        pid=os.getpid(),
                        tool_version=__version__,
                        process=process_token(os.getpid()),
                        run_lock=run_lock,
                    )
                )
        except sa.exc.DBAPIError as exc:
            self._release_run_lock(run_id)
            raise self._unwritable(exc) from None
        except BaseException:
            self._release_run_lock(run_id)
            raise
        return run_id

    def finish(self, run_id: str, exit_code: int, summary: dict[str, Any] | None = None) -> None:
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    runs.update()
                    .where(runs.c.id == run_id)
                    .values(
                        finished_at=utc_now(),
                        exit_code=int(exit_code),
                        outcome=outcome_for(int(exit_code)),
                        summary=json.dumps(summary or {}, default=str, sort_keys=True),
                    )
                )
        finally:
            # Only after the outcome is written: a free lock with a `running` row means killed.
            self._release_run_lock(run_id)

    def reap_killed(self) -> list[RunRecord]:
        """Mark `killed` every `running` run whose process is gone; return them as marked.

        Same host: the pid no longer names the process that started the run (see
        `process_gone`). Any host, on a PostgreSQL ledger: the run's advisory lock is free.
        A run of another host on a SQLite ledger cannot be judged and stays `running` (a
        SQLite ledger belongs to one host; several hosts share a PostgreSQL one). The
        update only touches rows still `running`, so a run that finished meanwhile keeps
        its real outcome."""
        with self.engine.connect() as connection:
            # A literal, not a parameter: a prepared generic plan would not use the partial index.
            running = runs.c.outcome == sa.literal_column(f"'{RUNNING}'")
            rows = connection.execute(sa.select(runs).where(running)).mappings().all()
        if not rows:
            return []
        host = socket.gethostname()
        gone = [self._record(row) for row in rows if self._run_gone(row, host)]
        marked = []
        now = utc_now()
        for run in gone:
            where = f"pid {run.pid} on {run.host}"
            summary = {
                **run.summary,
                "error": f"the run's process ({where}) ended without recording an outcome: killed, or its host "
                f"went down; found at {now.isoformat(timespec='seconds')} by pid {os.getpid()} on {host}",
            }
            with self.engine.begin() as connection:
                updated = connection.execute(
                    runs.update()
                    .where(runs.c.id == run.id, runs.c.outcome == RUNNING)
                    .values(outcome=KILLED, summary=json.dumps(summary, default=str, sort_keys=True))
                ).rowcount
            if updated:
                marked.append(replace(run, outcome=KILLED, summary=summary))
                log.warning("run %s (%s, started %s, %s) was killed before it finished; marked killed",
                            run.id, run.command, run.started_at.isoformat(timespec="seconds"), where)
        return marked

    def _run_gone(self, row, host: str) -> bool:
        if row["host"] == host:
            return process_gone(row["pid"], row.get("process"))
        if row.get("run_lock") is None or not self._postgres:
            return False
        with self.engine.connect() as connection:
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            key = {"c": RUN_LOCK_CLASS, "k": row["run_lock"]}
            if not connection.execute(sa.text("SELECT pg_try_advisory_lock(:c, :k)"), key).scalar():
                return False
            connection.execute(sa.text("SELECT pg_advisory_unlock(:c, :k)"), key)
            return True

    def _take_run_lock(self, run_id: str) -> int | None:
        """A session advisory lock held on a connection of its own until the run ends: the
        server frees it when the process dies (its socket closes), which is how another
        host knows. Server-side keepalives make a host that vanished count as dead within
        about a minute instead of the kernel's default two hours. None when a live run
        holds the same key already."""
        key = int(run_id[:8], 16) - (1 << 31)  # the second key is a signed 32-bit integer
        connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            for setting in ("tcp_keepalives_idle = 30", "tcp_keepalives_interval = 10", "tcp_keepalives_count = 3"):
                connection.execute(sa.text(f"SET {setting}"))
            taken = connection.execute(sa.text("SELECT pg_try_advisory_lock(:c, :k)"), {"c": RUN_LOCK_CLASS, "k": key}).scalar()
        except BaseException:
            connection.invalidate()
            connection.close()
            raise
        if not taken:
            connection.invalidate()
            connection.close()
            return None
        self._run_locks[run_id] = connection
        return key

    def _release_run_lock(self, run_id: str) -> None:
        connection = self._run_locks.pop(run_id, None)
        if connection is None:
            return
        try:
            # Closing the DBAPI connection ends the session, and the lock with it; a plain
            # close() would hand the session, lock held, back to the pool.
            connection.invalidate()
            connection.close()
        except sa.exc.DBAPIError as exc:
            log.debug("closing the run lock connection of %s: %s", run_id, exc)

    def runs(self, *, kind: str | None = None, limit: int = 50) -> list[RunRecord]:
        """Newest first; `kind` matches a command or a command group ('backup')."""
        query = sa.select(runs).order_by(runs.c.started_at.desc(), runs.c.id.desc()).limit(limit)
        if kind:
            query = query.where(sa.or_(runs.c.command == kind, runs.c.command.like(f"{kind} %")))
        with self.engine.connect() as connection:
            return [self._record(row) for row in connection.execute(query).mappings()]

    def last(self, command: str, *, outcome: str | None = None) -> RunRecord | None:
        query = sa.select(runs).where(runs.c.command == command)
        if outcome:
            query = query.where(runs.c.outcome == outcome)
        query = query.order_by(runs.c.started_at.desc()).limit(1)
        with self.engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return self._record(row) if row else None

    @staticmethod
    def _record(row) -> RunRecord:
        return RunRecord(
            id=row["id"],
            command=row["command"],
            started_at=_aware(row["started_at"]),
            finished_at=_aware(row["finished_at"]),
            outcome=row["outcome"],
            exit_code=row["exit_code"],
            summary=json.loads(row["summary"] or "{}"),
            host=row["host"],
            pid=row["pid"],
            tool_version=row["tool_version"],
            process=row.get("process"),
            run_lock=row.get("run_lock"),
        )
