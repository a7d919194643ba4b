"""Point-in-time recovery of PostgreSQL through pgBackRest (issue 16): we configure it,
run its commands and read back what it and the server know; we never ship WAL ourselves.

Facts relied on, read from `pgbackrest help` of the installed version (pgBackRest 2.45,
Debian's `pgbackrest` package) and measured against it here with PostgreSQL 15:
- Every command takes `--config=FILE` and `--stanza=NAME`; a `--pg1-path` on the command
  line overrides the file's. The server pushes WAL with
  `archive_command = 'pgbackrest --config=FILE --stanza=NAME archive-push %p'`, which needs
  `archive_mode = on` and `wal_level = replica` (or logical): a server restart.
- pgBackRest reaches the local server only through its Unix socket (`pg1-socket-path`,
  `pg1-port`, `pg1-user`, `pg1-database`), never over TCP: the socket directory comes from
  the database URL when it names one, else from the running server's postmaster.pid.
  `pg1-host-user` only applies to a remote `pg1-host`; locally every command runs as the
  data directory's OS user (archive-push runs inside the server anyway).
- Retention: `repo1-retention-full` (a count with the default `repo1-retention-full-type =
  count`) is the one knob matching `[backups.retention] keep_last`; `expire` runs after each
  backup and the archive is kept for the retained full backups. pgBackRest has no
  hourly/daily/weekly/monthly retention.
- `start-fast = y` makes `backup` ask for an immediate checkpoint (otherwise it waits for
  the next scheduled one, up to checkpoint_timeout). `archive-check` (default y) makes a
  backup wait until the WAL it needs is in the repository.
- `info --output=json` is a list of stanzas: `status.code` (0 ok, 1 missing stanza path,
  2 no valid backups, ...) and `status.message`; `backup[]` with `label`, `type`
  (full/diff/incr), `error` (bool), `timestamp.start`/`timestamp.stop` in whole epoch
  seconds, `archive.start`/`archive.stop` (WAL names), `lsn.start`/`lsn.stop`; `archive[]`
  with `min`/`max` WAL names; `repo[].status`. It gives no time for archived WAL.
- `restore --type=time --target=T` without `--set` picks a backup whose stop time (whole
  seconds) is before T, and falls back to the LATEST backup when none is (help text):
  so we always pass `--set` ourselves. A target in the same second as a backup's stop is
  refused ("unable to find backup set with stop time less than ..."): the window opens
  one second after the oldest backup's stop.
- `restore --archive-mode=off` writes `archive_mode = 'off'` into the restored
  postgresql.auto.conf, beside `restore_command = 'pgbackrest --config=FILE
  --pg1-path=DIR --stanza=NAME archive-get %f "%p"'`, `recovery_target_time` and
  `recovery_target_action`; the data directory must exist and be empty.
- PostgreSQL 15 stops replay at the first commit after the target time ("recovery stopping
  before commit of transaction ..."). When the archive holds no commit after the target,
  the server stops with FATAL "recovery ended before configured recovery target was
  reached" instead of restoring the end of the archive. Nothing after the target being
  archived, the end of the replay is the state at the target: the scratch cluster
  (integrity/db/scratch_cluster.py) then restarts with `recovery_target_lsn` = the replay's
  end ("redo done at LSN" in the log), so WAL archived meanwhile is not replayed.

The window (`window`): oldest = one second after the oldest valid backup's stop time
(pgBackRest's own rule above). newest = `pg_stat_archiver.last_archived_time` on the live
server: the only time anybody records for archived WAL (pgBackRest's info has names only),
and the server's own record of its last successful archive_command. It is an upper bound:
the segment was closed slightly earlier (archive-push's duration), and a restore to a moment
after the archive's last commit fails as said above. It is trusted only when the
repository holds that segment (info's archive max), which proves the archive_command
pushes into this repository. Errors come from info's status, from pg_stat_archiver
(`failed_count`, `last_failed_wal`, `last_failed_time` newer than the last success) and
from archive_mode being off. `caught_up`: the server's current WAL position is the end of
the last archived segment, so nothing written since waits to be archived.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from game_core.db import POSTGRESQL, ConnectionSettings, DatabaseTarget, parse_database_url
from game_core.errors import PreconditionFailed
from integrity.db.connect import Database, connection_settings
from integrity.db.scratch import RestoreFailed, ScratchCopy
from integrity.db.scratch_cluster import as_os_user, give_to, owner_of, scratch_cluster
from integrity.errors import ConfigInvalid
from integrity.pitr.engine import EngineCommand, RecoveryWindow

INSTALL_HINT = "install Debian's pgbackrest package (apt-get install pgbackrest)"
SEGMENT_NAME_LENGTH = 24  # TTTTTTTTXXXXXXXXYYYYYYYY: timeline, then the segment number in two halves


class PgBackRestMissing(PreconditionFailed):
    """The pgbackrest program is not installed."""


class PgBackRestFailed(PreconditionFailed):
    """A pgbackrest command failed; the message is its ERROR line."""


@dataclass(frozen=True)
class BackupSet:
    label: str
    type: str  # full | diff | incr
    started: datetime
    stopped: datetime


@dataclass(frozen=True)
class ArchiverState:
    """pg_stat_archiver and the settings around it, read from the live server."""

    archive_mode: str
    archive_command: str
    last_archived_wal: str | None
    last_archived_time: datetime | None
    failed_count: int
    last_failed_wal: str | None
    last_failed_time: datetime | None
    current_lsn: int  # bytes
    segment_bytes: int



def _archive_directory(settings) -> Path:
    """[pitr] repository, or the `pitr/pgbackrest` directory of the backup repository named
    by [pitr] store. pgBackRest's own S3 client speaks only HTTPS, which the tests' object
    storage cannot offer here, so an archive in a bucket is refused rather than untested."""
    if not settings.pitr.store:
        return settings.pitr.repository
    from integrity.pitr.litestream import archive_location

    location, _ = archive_location(settings)
    if not isinstance(location, Path):
        raise ConfigInvalid(f"[pitr] store {settings.pitr.store!r} is on object storage: pgBackRest's archive must be a "
                            "directory here; set [pitr] repository (or store a directory repository's name)")
    return location.parent / "pgbackrest"

@dataclass
class PgBackRestEngine:
    """pgBackRest archiving one PostgreSQL cluster into `[pitr] repository`."""

    database: DatabaseTarget
    data_dir: Path  # the cluster's data directory (pg1-path)
    repository: Path
    state_dir: Path  # <state dir>/pitr: the configuration, logs and locks
    stanza: str
    archive_timeout_seconds: int
    retention_full: int
    resolution_seconds: float
    binary: str
    bindir: str = ""
    connection: ConnectionSettings = ConnectionSettings()  # the configured timeouts, for reading the live server
    name: str = "pgbackrest"

    @classmethod
    def from_settings(cls, settings) -> PgBackRestEngine:
        target = parse_database_url(settings.database_url)
        if target.kind != POSTGRESQL:
            raise PreconditionFailed("pgBackRest archives PostgreSQL only; this database is not PostgreSQL")
        pitr = settings.pitr
        if not pitr.pg_data_dir and pitr.enabled:
            raise ConfigInvalid("[pitr] pg_data_dir is empty; set it to the PostgreSQL cluster's data directory "
                                "(SHOW data_directory), which pgBackRest backs up")
        binary = shutil.which("pgbackrest")
        if binary is None:
            raise PgBackRestMissing(f"pgbackrest not found on PATH; {INSTALL_HINT}")
        return cls(
            database=target,
            data_dir=Path(pitr.pg_data_dir or "PG_DATA_DIR"),  # disabled: `pitr config` only shows the files
            repository=_archive_directory(settings),
            state_dir=settings.state.dir / "pitr",
            stanza=pitr.stanza,
            archive_timeout_seconds=pitr.archive_timeout_seconds,
            retention_full=settings.backups.retention.keep_last,
            # The window's oldest edge and backup stop times are whole seconds.
            resolution_seconds=max(pitr.resolution_seconds, 1.0),
            binary=binary,
            bindir=pitr.pg_bindir,
            connection=connection_settings(settings),
        )

    # ---------------------------------------------------------------- configuration

    @property
    def config_path(self) -> Path:
        return self.state_dir / "pgbackrest.conf"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"

    @property
    def lock_dir(self) -> Path:
        return self.state_dir / "lock"

    def config_files(self) -> dict[Path, str]:
        url = self.database.url
        lines = [
            "# Written by `integrity` from integrity.toml [pitr]; edit that file, not this one.",
            "[global]",
            f"repo1-path={self.repository}",
            f"repo1-retention-full={self.retention_full}",  # [backups.retention] keep_last
            "start-fast=y",
            f"log-path={self.log_dir}",
            f"lock-path={self.lock_dir}",
            "log-level-file=info",
            "",
            f"[{self.stanza}]",
            f"pg1-path={self.data_dir}",
            f"pg1-port={url.port or 5432}",
        ]
        socket_dir = self._socket_dir()
        if socket_dir:
            lines.append(f"pg1-socket-path={socket_dir}")
        if url.username:
            lines.append(f"pg1-user={url.username}")
        if url.database:
            lines.append(f"pg1-database={url.database}")
        return {self.config_path: "\n".join(lines) + "\n"}

    def _socket_dir(self) -> str | None:
        """pgBackRest connects through the socket only: the URL's socket directory, else
        the one the running server wrote into postmaster.pid (its 5th line), else none
        (pgBackRest then looks in the OS's default)."""
        url = self.database.url
        for host in (url.host, url.query.get("host")):
            if isinstance(host, str) and host.startswith("/"):
                return host
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return None
        return lines[4].strip() if len(lines) > 4 and lines[4].strip() else None

    def write_config(self) -> list[Path]:
        """The configuration, written atomically, and the directories pgBackRest writes
        into, made and handed to the cluster's OS user (it runs every command as that user)."""
        from integrity.backups.durable import fsync_directory

        user = self.os_user()
        for directory in (self.state_dir, self.log_dir, self.lock_dir, self.repository):
            directory.mkdir(parents=True, exist_ok=True)
            if directory is not self.state_dir:
                give_to(directory, user)
        written = []
        for path, text in self.config_files().items():
            temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
            with temporary.open("w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            temporary.chmod(0o644)  # read by archive-push inside the server; holds no secret
            os.replace(temporary, path)
            fsync_directory(path.parent)
            written.append(path)
        self._require_readable_by(user)
        return written

    def _require_readable_by(self, user: str) -> None:
        """archive-push runs inside the server as `user`: a configuration it cannot read
        (a state directory under a 0700 home) fails every archive_command, silently."""
        readable = subprocess.run(as_os_user(["test", "-r", str(self.config_path)], user), capture_output=True)
        if readable.returncode != 0:
            raise PreconditionFailed(f"{self.config_path} is not readable by {user}, the cluster's OS user that runs "
                                     "archive-push; put [state] dir where that user can read it")

    def os_user(self) -> str:
        return owner_of(self.data_dir)

    def _base(self) -> tuple[str, ...]:
        return (self.binary, f"--config={self.config_path}", f"--stanza={self.stanza}")

    def archive_command(self) -> str:
        return shlex.join([*self._base(), "archive-push"]) + " %p"

    def server_settings(self) -> dict[str, str]:
        """The postgresql.conf lines the operator must set (then restart the server)."""
        return {
            "archive_mode": "on",
            "wal_level": "replica",
            "archive_command": self.archive_command(),
            "archive_timeout": str(self.archive_timeout_seconds),
        }

    def replicator(self) -> tuple[str, ...] | None:
        return None  # the server archives by itself through archive_command

    def restore_argv(self, moment: datetime | str, data_dir: Path | str, backup_set: str = "SET") -> tuple[str, ...]:
        target = moment if isinstance(moment, str) else _target_text(moment)
        return (*self._base(), "restore", f"--pg1-path={data_dir}", f"--set={backup_set}", "--type=time",
                f"--target={target}", "--target-action=promote", "--archive-mode=off")

    def commands(self) -> list[EngineCommand]:
        base = self._base()
        return [
            EngineCommand("archive-push", (*base, "archive-push", "%p")),
            EngineCommand("stanza-create", (*base, "stanza-create")),
            EngineCommand("check", (*base, "check")),
            EngineCommand("backup", (*base, "backup", "--type=full")),
            EngineCommand("backup", (*base, "backup", "--type=incr")),
            EngineCommand("info", (*base, "info", "--output=json")),
            EngineCommand("restore", self.restore_argv("TIME", "SCRATCH_DATA_DIR")),
        ]

    # ---------------------------------------------------------------- pgBackRest's commands

    def _run(self, *arguments: str) -> str:
        if not self.config_path.is_file():
            raise PreconditionFailed(f"{self.config_path} does not exist; run `integrity pitr config` (with [pitr] "
                                     "enabled) to write pgBackRest's configuration")
        argv = as_os_user([*self._base(), *arguments], self.os_user())
        env = dict(os.environ)
        if self.database.url.password:  # libpq reads it; never on the command line or in the file
            env["PGPASSWORD"] = self.database.url.password
        try:
            done = subprocess.run(argv, capture_output=True, text=True, env=env)
        except OSError as exc:
            raise PgBackRestMissing(f"pgbackrest could not start ({exc}); {INSTALL_HINT}") from None
        if done.returncode != 0:
            raise PgBackRestFailed(f"pgbackrest {arguments[0]} exited with status {done.returncode}: "
                                   f"{_error_line(done.stdout + done.stderr)}")
        return done.stdout

    def create_stanza(self) -> None:
        """`stanza-create`: the repository's record of this cluster (idempotent)."""
        self._run("stanza-create")

    def check(self) -> None:
        """`check`: the configuration is right and a WAL segment reaches the repository."""
        self._run("check")

    def backup(self, kind: str = "full") -> BackupSet:
        """A base backup (`full` or `incr`; `diff` too); returns the new backup set."""
        if kind not in ("full", "diff", "incr"):
            raise ValueError(f"unknown backup type {kind!r}")
        before = {backup.label for backup in self.backups()}
        self._run("backup", f"--type={kind}")
        made = [backup for backup in self.backups() if backup.label not in before]
        if not made:
            raise PgBackRestFailed("pgbackrest backup reported success but info lists no new backup")
        return made[-1]

    def info(self) -> dict:
        """This stanza's entry of `info --output=json`."""
        stanzas = json.loads(self._run("info", "--output=json") or "[]")
        return next((entry for entry in stanzas if entry.get("name") == self.stanza), {})

    def backups(self, info: dict | None = None) -> list[BackupSet]:
        """The valid backups, oldest first."""
        info = self.info() if info is None else info
        found = [
            BackupSet(entry["label"], entry["type"], _epoch(entry["timestamp"]["start"]), _epoch(entry["timestamp"]["stop"]))
            for entry in info.get("backup", []) if not entry.get("error")
        ]
        return sorted(found, key=lambda backup: backup.stopped)

    # ---------------------------------------------------------------- what the engine reports

    def archiver_state(self) -> ArchiverState:
        with Database(self.database, self.connection, guarded=True).snapshot() as connection:
            row = connection.execute(sa.text(
                "SELECT current_setting('archive_mode'), current_setting('archive_command'), last_archived_wal, "
                "last_archived_time, failed_count, last_failed_wal, last_failed_time, "
                "pg_current_wal_lsn() - '0/0'::pg_lsn, "
                "(SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size') FROM pg_stat_archiver"
            )).one()
        return ArchiverState(row[0], row[1], row[2], row[3], int(row[4] or 0), row[5], row[6], int(row[7]), int(row[8]))

    def window(self) -> RecoveryWindow:
        errors = []
        info = self.info()
        status = info.get("status", {"code": 1, "message": "the stanza is not in the repository"})
        if status.get("code", 0) != 0:
            errors.append(f"pgBackRest stanza {self.stanza}: {status.get('message')}; create it and take a full backup: "
                          f"`{shlex.join([*self._base(), 'stanza-create'])}`, then "
                          f"`{shlex.join([*self._base(), 'backup', '--type=full'])}` (as {self.os_user()})")
        backups = self.backups(info)
        oldest = backups[0].stopped + timedelta(seconds=1) if backups else None
        archived_max = max((entry.get("max") or "" for entry in info.get("archive", [])), default="")

        server = self.archiver_state()
        newest, caught_up = None, False
        if server.archive_mode == "off":
            errors.append("the server's archive_mode is off: nothing is archived; set it as `integrity pitr config` "
                          "shows and restart PostgreSQL")
        if server.failed_count and server.last_failed_time and (
                server.last_archived_time is None or server.last_failed_time > server.last_archived_time):
            errors.append(f"archiving is failing: archive_command failed {server.failed_count} time(s), last on "
                          f"{server.last_failed_wal} at {_text(server.last_failed_time)}; see the server log and "
                          f"{self.log_dir}")
        # The last archived file may be a backup label (SEGMENT.OFFSET.backup) or a
        # timeline history file: its first 24 characters name the segment it belongs to.
        last = server.last_archived_wal
        if last and _is_segment(last[:SEGMENT_NAME_LENGTH]):
            if archived_max and archived_max >= last[:SEGMENT_NAME_LENGTH]:
                newest = server.last_archived_time.astimezone(UTC)
                # Nothing waits when the server writes at the very end of the repository's newest segment.
                caught_up = server.current_lsn == (_segment_number(archived_max, server.segment_bytes) + 1) * server.segment_bytes
            else:
                errors.append(f"the server archived {last} at {_text(server.last_archived_time)} but the repository's "
                              f"newest WAL is {archived_max or 'none'}: archive_command does not push into "
                              f"{self.repository} (it is {server.archive_command!r})")
        if oldest is not None and newest is not None and newest < oldest:
            # Right after the first full backup: the segment its end was written to is archived,
            # but a restore needs WAL from after the backup's stop, which comes with the next one.
            errors.append(f"nothing is restorable yet: no WAL has been archived since backup {backups[0].label} ended "
                          f"at {_text(backups[0].stopped)}; the next segment is archived within archive_timeout "
                          "(or run `SELECT pg_switch_wal()` on the server)")
            return RecoveryWindow(oldest=None, newest=None, errors=tuple(errors), caught_up=False)
        return RecoveryWindow(oldest=oldest, newest=newest, errors=tuple(errors), caught_up=caught_up)

    # ---------------------------------------------------------------- restore

    @contextmanager
    def restored_at(self, moment: datetime, scratch_dir: Path, *, window: RecoveryWindow | None = None,
                    timeout_seconds: float = 3600.0) -> Iterator[ScratchCopy]:
        """The cluster as it was at `moment`, restored by pgBackRest into a claimed scratch
        cluster that is started, promoted, and always stopped and removed. `window`: the
        caller's reading of `window()`; read here when not given."""
        moment = moment.astimezone(UTC)
        window = self.window() if window is None else window
        if not window.contains(moment):
            raise PreconditionFailed(f"{_text(moment)} is outside the point-in-time window ({_window_text(window)}); "
                                     "run `integrity pitr status` for the window")
        candidates = [candidate for candidate in self.backups() if candidate.stopped + timedelta(seconds=1) <= moment]
        if not candidates:  # expired since the window was read
            raise PreconditionFailed(f"no backup ends before {_text(moment)} any more; run `integrity pitr status` for the window")
        backup = candidates[-1]
        user = self.os_user()

        def fill(data: Path) -> None:
            try:
                self._run(*self.restore_argv(moment, data, backup.label)[3:])
            except PgBackRestFailed as exc:
                raise RestoreFailed(str(exc)) from None

        url = self.database.url
        with scratch_cluster(scratch_dir, f"{self.stanza}-{moment:%Y%m%dT%H%M%S}-{secrets.token_hex(4)}",
                             os_user=user, fill=fill, username=url.username or user, database=url.database or "postgres",
                             bindir=self.bindir, timeout_seconds=timeout_seconds,
                             description=f"scratch cluster (pgBackRest restore of {backup.label} to {_text(moment)})") as copy:
            yield copy


def _epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _target_text(moment: datetime) -> str:
    """A recovery_target_time PostgreSQL reads exactly: UTC, microseconds, explicit offset."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def _text(moment: datetime | None) -> str:
    return "never" if moment is None else moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _window_text(window: RecoveryWindow) -> str:
    if window.oldest is None or window.newest is None:
        return "nothing restorable yet" + (f": {window.errors[0]}" if window.errors else "")
    return f"{_text(window.oldest)} to {_text(window.newest)}"


def _is_segment(name: str) -> bool:
    return len(name) == SEGMENT_NAME_LENGTH and all(c in "0123456789ABCDEF" for c in name)


def _segment_number(name: str, segment_bytes: int) -> int:
    return int(name[8:16], 16) * (0x100000000 // segment_bytes) + int(name[16:24], 16)


def _error_line(output: str) -> str:
    """pgBackRest's `ERROR: [code]: message` line, else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return next((line for line in lines if "ERROR:" in line), lines[-1] if lines else "no message")
