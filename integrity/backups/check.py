"""`integrity backup check`: prove the whole backup path works before it is needed.

Rights, tools, space and settings are checked one by one, then a real backup of the
configured database is written into a throwaway repository beside the real one (same
disk, same permissions), read back, hash-checked and removed. Each finding names the
setting to fix. Exit 0 when every finding passed (warnings allowed), 4 otherwise.

With `[pitr] enabled` the point-in-time path is proven too (`_point_in_time_path`): a
marker player written to the guarded database, the archive receiving it within the lag
objective, a restore of that moment into scratch holding it, and the marker deleted.
"""

from __future__ import annotations

import os
import shutil
import secrets
from dataclasses import dataclass, replace

from game_core.db import POSTGRESQL
from game_core.errors import ExitCode, Failure
from integrity.backups.catalog import read_catalog
from integrity.backups.plausibility import assess_against_repository
from integrity.backups.repository import TEMP_PREFIX, Repository
from integrity.backups.encryption import encryption_finding
from integrity.backups.signing import signing_finding
from integrity.db.connect import Database, guarded_target
from integrity.db.engines import engine_for
from integrity.settings import Settings, schedule_seconds
from integrity.storage.location import S3Url


@dataclass(frozen=True)
class CheckFinding:
    name: str
    state: str  # "ok" | "warn" | "fail"
    detail: str


@dataclass(frozen=True)
class BackupCheckReport:
    findings: tuple[CheckFinding, ...]

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.PRECONDITION if any(f.state == "fail" for f in self.findings) else ExitCode.OK

    def summary(self) -> dict:
        return {f.name: f.state for f in self.findings}


def check_backup_path(settings: Settings, *, command: str = "backup check") -> BackupCheckReport:
    findings: list[CheckFinding] = []
    findings += _database_rights(settings)
    if isinstance(settings.backups.repository, S3Url):
        from integrity.backups.object_repository import ObjectRepository
        from integrity.backups.remote_check import object_storage_findings

        repository = ObjectRepository.of(settings)
        findings += object_storage_findings(settings, repository, CheckFinding)
    else:
        repository = Repository(settings.backups.repository)
        findings += _repository_space(settings, repository)
    findings += _settings_sanity(settings)
    findings += [CheckFinding("signing", *signing_finding(settings))]
    findings += [CheckFinding("encryption", *encryption_finding(settings))]
    if not repository.remote:
        findings += _same_disk(settings, repository)
    if not any(f.state == "fail" for f in findings):
        findings += _real_backup(settings, repository, command)
    if settings.pitr.enabled:
        findings += _point_in_time_path(settings, command)
    return BackupCheckReport(tuple(findings))


def _database_rights(settings: Settings) -> list[CheckFinding]:
    return [CheckFinding(r.name, r.state, r.detail) for r in engine_for(Database.of(settings)).backup_readiness()]


def _estimated_next_size(settings: Settings, repository: Repository) -> int | None:
    """The last backup's compressed size plus, for SQLite, the staged uncompressed copy."""
    if repository.exists():
        catalog = read_catalog(repository)
        sized = [b for b in catalog.backups if b.size]
        if sized:
            manifest = repository.read_manifest(sized[-1].id)
            staged = manifest.files[0].raw_size if manifest.engine != POSTGRESQL else 0
            return int((manifest.size + staged) * 1.2)
    target = guarded_target(settings)
    if target.sqlite_path and target.sqlite_path.exists():
        return int(target.sqlite_path.stat().st_size * 1.5)
    return None


def _repository_space(settings: Settings, repository: Repository) -> list[CheckFinding]:
    try:
        # Never create it here: a repository on an unmounted path would silently land on
        # the root file system (only `integrity init` creates one).
        repository.require_exists()
        probe = repository.root / f"{TEMP_PREFIX}probe-{secrets.token_hex(4)}"
        probe.write_bytes(b"probe")
        probe.unlink()
    except (Failure, OSError) as exc:
        return [CheckFinding("repository", "fail", f"{exc}; set [backups] repository to a writable directory")]
    findings = [CheckFinding("repository", "ok", f"{repository.root} writable")]
    free = shutil.disk_usage(repository.root).free
    needed = _estimated_next_size(settings, repository)
    if needed is not None and free < needed:
        findings.append(CheckFinding(
            "space", "fail",
            f"{free / 1e6:.0f} MB free in {repository.root}, the next backup needs about {needed / 1e6:.0f} MB; "
            "free space or set [backups] repository to a larger disk",
        ))
    else:
        estimate = f", next backup about {needed / 1e6:.1f} MB" if needed is not None else ""
        findings.append(CheckFinding("space", "ok", f"{free / 1e9:.1f} GB free{estimate}"))
    return findings


def _settings_sanity(settings: Settings) -> list[CheckFinding]:
    interval = schedule_seconds(settings.schedule.backup)
    rpo = settings.objectives.rpo_seconds
    if settings.schedule.backup == "off":
        return [CheckFinding("settings", "warn", "[schedule] backup is off: backups happen only when someone runs them")]
    if interval is not None and interval > rpo:
        return [CheckFinding(
            "settings", "fail",
            f"[schedule] backup runs every {settings.schedule.backup} but [objectives] rpo_seconds is {rpo}: "
            "the newest backup will be too old between runs; back up more often or raise rpo_seconds",
        )]
    return [CheckFinding("settings", "ok", f"backup {settings.schedule.backup}, rpo {rpo}s, keep_last {settings.backups.retention.keep_last}")]


def _same_disk(settings: Settings, repository: Repository) -> list[CheckFinding]:
    target = guarded_target(settings)
    if not repository.root.is_dir():
        return []  # reported by the repository finding
    where = f"repository on {describe_filesystem(repository.root)}"
    if target.sqlite_path is None or not target.sqlite_path.exists():
        server = "" if target.sqlite_path else f"; the database is on the server {target.url.host or 'local socket'}"
        return [CheckFinding("filesystems", "ok", where + server)]
    findings = [CheckFinding("filesystems", "ok", f"{where}; database on {describe_filesystem(target.sqlite_path)}")]
    if os.stat(target.sqlite_path).st_dev == os.stat(repository.root).st_dev:
        return findings + [CheckFinding(
            "placement", "warn",
            f"the repository {repository.root} is on the same filesystem as the database: one disk failure loses "
            "both; set [backups] repository to another disk, or copy backups off this machine",
        )]
    return findings + [CheckFinding("placement", "ok", "repository and database are on different filesystems")]


def describe_filesystem(path) -> str:
    """"/dev/vdb (ext4, mounted at /mnt/backups, device 254:16)": which mount a path is
    really on, so an unmounted network share shows up as the root file system."""
    real = os.path.realpath(path)
    mount, device_name, fs_type = "/", "?", "?"
    try:
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(mount):
                    mount, device_name, fs_type = point, fields[0], fields[2]
    except OSError:
        pass
    device = os.stat(real).st_dev
    return f"{device_name} ({fs_type}, mounted at {mount}, device {os.major(device)}:{os.minor(device)})"


def _real_backup(settings: Settings, repository: Repository, command: str) -> list[CheckFinding]:
    from integrity.backups.create import create_backup
    from integrity.backups.verify import quick_verify

    name = f"{TEMP_PREFIX}check-{secrets.token_hex(4)}"
    throwaway = S3Url(f"{repository.location}/{name}") if repository.remote else repository.root / name
    trial = replace(settings, backups=replace(settings.backups, repository=throwaway))
    try:
        # The trial lives inside the repository as a `.tmp-` directory (or key prefix): hold
        # the writer lock so that a concurrent prune does not remove it as a leftover.
        with repository.writer_lock(command=command, wait_seconds=0):
            Repository.of(trial).ensure()
            created = create_backup(trial, label="backup check", command=command, purpose="check")
            manifest = quick_verify(Repository.of(trial), created.manifest.id)  # its signature too
            # The same plausibility a real backup gets, against the real repository's history.
            reasons = list(dict.fromkeys([*(manifest.suspect_reasons or ()), *assess_against_repository(
                settings.backups, repository, identity=manifest.source_identity, tables=manifest.tables,
                files=manifest.files, source=manifest.source,
            )]))
        findings = [CheckFinding(
            "trial backup", "ok",
            f"wrote, read back and removed a {created.manifest.size / 1e6:.1f} MB backup in {created.seconds:.1f}s",
        )]
        if reasons:
            findings.append(CheckFinding(
                "plausibility", "fail",
                "a backup taken now would be SUSPECT: " + "; ".join(reasons)
                + "; check [database] url (is it the database the game writes?) and the pg_dump on PATH",
            ))
        else:
            findings.append(CheckFinding("plausibility", "ok", "rows, data size, newest rows and source agree with the previous backups"))
        return findings
    except Failure as exc:
        return [CheckFinding("trial backup", "fail", str(exc))]
    finally:
        if repository.remote:
            from integrity.backups.remote_check import remove_prefix

            remove_prefix(Repository.of(trial))
        else:
            shutil.rmtree(throwaway, ignore_errors=True)


# ---------------------------------------------------------------- the point-in-time path (issue 16)

PITR_MARKER_PREFIX = "integrity.pitr-check."
# Beyond the lag objective: the engine's own step (Litestream lists whole seconds and ships
# every sync interval) and the time to read its window.
PITR_GRACE_SECONDS = 5.0
_PITR_POLL_SECONDS = 0.2
# The marker's removal is written this long after the marker, and the restore asks for the
# whole second before the removal: at least 2 s after the marker, so the marker is in it
# when the engine shipped it within 2 s (Litestream: one 1s sync interval, whole-second
# listing). An archive slower than that fails "pitr restore" even within a longer
# objective: the check proves a 2 s recovery point, not the objective's.
_PITR_MARKER_LIFETIME = 3.0


def _point_in_time_path(settings: Settings, command: str) -> list[CheckFinding]:
    """Write a marker player, delete it at least _PITR_MARKER_LIFETIME later, wait (bounded
    by the lag objective plus grace) until the archive's newest position reaches the
    deletion's second, then restore that second (before the deletion, after the marker)
    into scratch and look for the marker. Findings "pitr archive" and "pitr restore".

    Engine-neutral on purpose: a restore to T holds what was shipped before T, on both
    engines; the restore, not the listing, is the proof."""
    import math
    import time
    from datetime import datetime, timedelta, timezone

    from integrity.pitr import engine_for

    try:
        engine = engine_for(settings)
    except Failure as exc:
        return [CheckFinding("pitr archive", "fail", str(exc))]
    marker = f"{PITR_MARKER_PREFIX}{secrets.token_hex(4)}"
    objective = settings.pitr.lag_objective_seconds
    deadline_seconds = objective + PITR_GRACE_SECONDS + 2 * engine.resolution_seconds
    try:
        written_at = _write_marker(settings, marker, command)
        try:
            # The deletion falls in a later whole second than marker + lifetime.
            delete_after = written_at + timedelta(seconds=_PITR_MARKER_LIFETIME)
            time.sleep(max(0.0, (delete_after - datetime.now(timezone.utc)).total_seconds()))
        finally:
            deleted_at = _delete_marker(settings, marker, command)
    except Failure as exc:
        return [CheckFinding("pitr archive", "fail", f"could not write the marker player {marker}: {exc}")]
    moment = deleted_at.replace(microsecond=0)  # the whole second before the deletion, after the marker
    started = time.monotonic()
    window = None
    while True:
        window = engine.window()
        if window.newest is not None and window.newest >= moment and window.contains(moment):
            break
        if time.monotonic() - started > deadline_seconds:
            newest = "nothing" if window.newest is None else f"{window.newest:%Y-%m-%d %H:%M:%S}Z"
            errors = f"; {engine.name} says: {'; '.join(window.errors)}" if window.errors else ""
            return [CheckFinding(
                "pitr archive", "fail",
                f"the marker written at {written_at:%H:%M:%S}Z did not reach the {engine.name} archive within "
                f"{math.ceil(deadline_seconds)}s (lag objective {objective}s + grace); its newest position is "
                f"{newest}{errors}; see runbooks/pitr-lag.md",
            )]
        time.sleep(_PITR_POLL_SECONDS)
    waited = (datetime.now(timezone.utc) - deleted_at).total_seconds()
    findings = [CheckFinding(
        "pitr archive", "ok",
        f"a marker written at {written_at:%H:%M:%S}Z and deleted at {deleted_at:%H:%M:%S}Z: the {engine.name} archive "
        f"reached the deletion's second {waited:.1f}s after it (lag objective {objective}s); window "
        f"{window.oldest:%Y-%m-%d %H:%M:%S}Z to {window.newest:%Y-%m-%d %H:%M:%S}Z",
    )]
    return findings + [_restore_finds_marker(settings, engine, moment, marker, window)]


def _write_marker(settings: Settings, marker: str, command: str):
    from datetime import datetime, timezone

    from game_core.store import Store
    from integrity.db.connect import Write
    from integrity.db.locks import database_lock

    database = Database.of(settings)
    with database_lock(database.target, state_dir=settings.state.dir, command=command, wait_seconds=0), \
            database.writer(Write.PITR_CHECK) as engine:
        Store(engine).create_player(marker)
    return datetime.now(timezone.utc)


def _delete_marker(settings: Settings, marker: str, command: str):
    """Delete the marker (it has no results: nothing cascades); returns when it was done."""
    from datetime import datetime, timezone

    from game_core.schema import players
    from integrity.db.connect import Write
    from integrity.db.locks import database_lock

    database = Database.of(settings)
    with database_lock(database.target, state_dir=settings.state.dir, command=command, wait_seconds=30), \
            database.writer(Write.PITR_CHECK) as engine, engine.begin() as connection:
        connection.execute(players.delete().where(players.c.username == marker))
    return datetime.now(timezone.utc)


def _restore_finds_marker(settings: Settings, engine, moment, marker: str, window) -> CheckFinding:
    import time

    import sqlalchemy as sa

    from game_core.schema import players

    started = time.perf_counter()
    try:
        with engine.restored_at(moment, settings.state.dir / "scratch", window=window) as copy, \
                Database.of(settings).beside(copy.target).reader() as restored, restored.connect() as connection:
            found = connection.execute(sa.select(sa.func.count()).select_from(players)
                                       .where(players.c.username == marker)).scalar_one()
    except (Failure, sa.exc.DBAPIError) as exc:
        return CheckFinding("pitr restore", "fail", f"restoring {moment:%Y-%m-%d %H:%M:%S}Z from the {engine.name} archive "
                                                    f"failed: {exc}; see runbooks/pitr-lag.md")
    seconds = time.perf_counter() - started
    if not found:
        return CheckFinding("pitr restore", "fail",
                            f"{moment:%Y-%m-%d %H:%M:%S}Z restored from the {engine.name} archive in {seconds:.1f}s, "
                            f"but the marker player {marker} written before it is not there: the archive does not hold "
                            "what the database committed; see runbooks/pitr-lag.md")
    return CheckFinding("pitr restore", "ok", f"{moment:%Y-%m-%d %H:%M:%S}Z restored from the {engine.name} archive into "
                                              f"scratch in {seconds:.1f}s and held the marker written before it")
