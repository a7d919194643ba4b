"""`integrity backup verify`: quick (hashes, decompression) and deep (restored and checked).

Quick: the manifest against manifest.sha256, every file's size and SHA-256, and
decompression to the end. `pg_restore -l` accepts a truncated archive and SQLite's
integrity_check misses a changed value (PITFALLS.md): only the hashes catch those.

Deep, on a scratch copy that is always removed: the engine's own check (SQLite
integrity_check and foreign_key_check; PostgreSQL a full read of every table, which the
fingerprints do), counts and aggregates against the manifest, keyed fingerprints per
table, drift against the previous backup (a table that shrank past `shrink_tolerance`
or emptied fails), then `checks.run_audits` for the clean or dirty state.

Every outcome goes to the repository journal; the ledger gets the summary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import sqlalchemy as sa

from game_core.errors import ExitCode, Failure, PreconditionFailed
from integrity.backups.archive import check_archive
from integrity.backups.encryption import DecryptionKeyUnavailable
from integrity.backups.repository import AuditVerdict, BackupCorrupt, BackupNotFound, Manifest, Repository
from integrity.backups.statistics import compare_statistics, table_statistics
from integrity.db.connect import Database
from integrity.db.engines import engine_for
from integrity.db.sql import error_reason
from integrity.fingerprint import database_fingerprints
from integrity.progress import NO_PROGRESS, Reporter
from integrity.settings import Settings


@dataclass(frozen=True)
class BackupVerification:
    backup_id: str
    quick: str  # "ok" | "failed"
    deep: str | None = None  # None (not asked) | "ok" | "failed"
    audit: AuditVerdict | None = None  # None: not audited
    problems: tuple[str, ...] = ()
    violations: tuple[dict, ...] = ()
    fingerprints: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0
    # What the journal and manifest already say against it (DEEP-FAILED, FAILED, SUSPECT,
    # dirty): a quick verify that passes proves the bytes, not that the backup is usable,
    # so `verify --all` must never print a bare "ok" beside a backup known to be bad.
    known_problems: tuple[str, ...] = ()

    @property
    def exit_code(self) -> ExitCode:
        if self.quick == "failed" or self.deep == "failed":
            return ExitCode.VERIFICATION_FAILED
        if self.deep is None and any(p.startswith(("DEEP-FAILED", "FAILED")) for p in self.known_problems):
            return ExitCode.VERIFICATION_FAILED
        if self.audit is AuditVerdict.DIRTY or (self.deep is None and self.known_problems):
            return ExitCode.PROBLEMS_FOUND
        return ExitCode.OK


@dataclass(frozen=True)
class VerifyReport:
    repository: str
    deep: bool
    results: tuple[BackupVerification, ...]
    journal_problems: tuple[str, ...] = ()  # lines skipped: shown, they do not change the verdicts

    @property
    def exit_code(self) -> ExitCode:
        codes = {result.exit_code for result in self.results}
        for code in (ExitCode.VERIFICATION_FAILED, ExitCode.PROBLEMS_FOUND):
            if code in codes:
                return code
        return ExitCode.OK

    def summary(self) -> dict:
        return {r.backup_id: {"quick": r.quick, "deep": r.deep, "audit": r.audit} for r in self.results}


def select_backups(repository: Repository, *, backup_id: str | None, latest: bool, all_: bool) -> list[str]:
    ids = repository.backup_ids()
    if backup_id:
        if not repository.has_backup(backup_id):
            raise BackupNotFound(f"no backup {backup_id} in {repository.location}; list them with `integrity backup list`")
        return [backup_id]
    if not ids:
        raise BackupNotFound(f"the repository {repository.location} holds no backups; take one with `integrity backup create`")
    return ids if all_ else ids[-1:]


def verify_backups(
    settings: Settings,
    *,
    backup_id: str | None = None,
    latest: bool = False,
    all_: bool = False,
    deep: bool = False,
    command: str = "backup verify",
    lock_wait: float = 0,
    progress: Reporter = NO_PROGRESS,
) -> VerifyReport:
    repository = Repository.of(settings)
    repository.require_exists()
    repository.require_journal_writable()  # verdicts that cannot be recorded are not worth the wait
    results = []
    for chosen in select_backups(repository, backup_id=backup_id, latest=latest, all_=all_):
        with repository.reading(chosen, command=command, wait_seconds=lock_wait):
            results.append(verify_one(settings, repository, chosen, deep=deep, command=command, progress=progress))
    catalog = _catalog(repository)
    known = known_problems(repository, catalog)
    results = [replace(result, known_problems=tuple(
        problem for problem in known.get(result.backup_id, ())
        if result.deep is None or not problem.startswith(("DEEP-FAILED", "dirty"))  # this run's own verdict says it
    )) for result in results]
    return VerifyReport(repository=repository.location, deep=deep, results=tuple(results),
                        journal_problems=catalog.journal_problems)


def _catalog(repository: Repository):
    from integrity.backups.catalog import read_catalog

    return read_catalog(repository)


def known_problems(repository: Repository, catalog=None) -> dict[str, tuple[str, ...]]:
    """Per backup, the states that make it unusable whatever its bytes say, with why."""
    found: dict[str, tuple[str, ...]] = {}
    for backup in (catalog or _catalog(repository)).backups:
        state, problems = backup.state, []
        if state.deep_failed:
            problems.append("DEEP-FAILED: " + ("; ".join(state.problems) or "see `integrity backup show`"))
        if state.failed:
            problems.append("FAILED by a restore or drill: " + ("; ".join(state.problems) or "see `integrity backup show`"))
        if state.suspect:
            problems.append("SUSPECT: " + "; ".join(state.suspect_reasons))
        if state.audit is AuditVerdict.DIRTY:
            problems.append("dirty: its last audit found violations")
        if problems:
            found[backup.id] = tuple(problems)
    return found


def quick_verify(repository: Repository, backup_id: str, progress: Reporter = NO_PROGRESS) -> Manifest:
    """Raise BackupCorrupt unless the backup is exactly its listed regular files with a
    valid manifest of its own id (`read_manifest`) and every file matches its hashes."""
    manifest = repository.read_manifest(backup_id)
    with progress.task(f"hashing {backup_id}", total=sum(e.size for e in manifest.files), unit="bytes") as task:
        for entry in manifest.files:
            check_archive(repository.file_of(backup_id, entry.name), entry, backup_id=backup_id, advance=task.advance)
    return manifest


def verify_one(settings: Settings, repository: Repository, backup_id: str, *, deep: bool, command: str,
               progress: Reporter = NO_PROGRESS) -> BackupVerification:
    started = time.perf_counter()
    try:
        manifest = quick_verify(repository, backup_id, progress)
    except BackupCorrupt as exc:
        repository.record_quick_check(backup_id, problem=str(exc), by=command)
        return BackupVerification(backup_id, quick="failed", problems=(str(exc),), seconds=time.perf_counter() - started)
    repository.record_quick_check(backup_id, problem=None, by=command)
    if not deep:
        return BackupVerification(backup_id, quick="ok", seconds=time.perf_counter() - started)
    return _deep_verify(settings, repository, manifest, command=command, started=started, progress=progress)


def _deep_verify(settings: Settings, repository: Repository, manifest: Manifest, *, command: str, started: float,
                 progress: Reporter = NO_PROGRESS) -> BackupVerification:
    live = Database.of(settings)
    target = live.target
    if manifest.engine != target.kind:
        # Not the backup's fault: there is nowhere to restore it. Say so; journal nothing.
        raise PreconditionFailed(
            f"backup {manifest.id} is a {manifest.engine} backup but the configured database is {target.kind}; "
            f"deep verification restores it next to the configured database: run it with --database-url "
            f"pointing at a {manifest.engine} database"
        )
    problems: list[str] = []
    fingerprints: dict[str, dict] = {}
    violations: tuple[dict, ...] = ()
    audit = None
    try:
        with engine_for(live).restored_copy(
            repository, manifest, scratch_dir=settings.state.dir / "scratch", progress=progress,
        ) as copy, live.beside(copy.target).reader() as engine:
            with engine.connect() as connection:
                checked = deep_checks(connection, repository, manifest, shrink_tolerance=settings.backups.shrink_tolerance,
                                      progress=progress)
                problems += checked.problems
                fingerprints = checked.fingerprints
                audit, violations = audit_copy(connection, progress)
    except DecryptionKeyUnavailable:
        raise  # this host's missing or wrong key, not the backup's fault: nothing journalled (exit 4)
    except Failure as exc:
        problems.append(str(exc))
    except sa.exc.DBAPIError as exc:
        problems.append(f"the restored copy cannot be read: {error_reason(exc)}")
    deep = "failed" if problems else "ok"
    repository.record_deep_check(manifest.id, problems=problems, fingerprints=fingerprints, by=command)
    if audit is not None and not problems:
        repository.record_audit(manifest.id, audit, list(violations), by=command)
    return BackupVerification(
        manifest.id, quick="ok", deep=deep, audit=audit if not problems else None,
        problems=tuple(problems), violations=violations, fingerprints=fingerprints,
        seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class DeepChecks:
    """What the deep checks found on a restored copy: problems (empty when it passed)
    and the keyed fingerprint of every table."""

    problems: tuple[str, ...]
    fingerprints: dict[str, dict]


def deep_checks(connection, repository: Repository, manifest: Manifest, *, shrink_tolerance: float,
                with_fingerprints: bool = True, progress: Reporter = NO_PROGRESS) -> DeepChecks:
    """The deep checks on an opened copy of `manifest`'s backup: the engine's own check,
    counts and aggregates against the manifest, fingerprints (PostgreSQL's full read),
    drift against the previous backup. Shared by `backup verify --deep` and `drill`; a
    drill of a SQLite backup leaves out the fingerprints (a Python pass over every row,
    the slowest check) because its compare with live reads every row of the copy too."""
    problems = engine_check(connection)
    problems += compare_statistics(manifest.tables, table_statistics(connection))
    if not with_fingerprints:
        return DeepChecks(tuple(problems + drift_problems(repository, manifest, shrink_tolerance)), {})
    fingerprints = {
        name: {
            "rows": fingerprint.rows,
            "digest": fingerprint.digest,
            "rows_per_second": round(fingerprint.rows_per_second),
            "seconds": round(fingerprint.seconds, 4),
        }
        for name, fingerprint in database_fingerprints(
            connection, progress=progress, expected_rows=manifest.row_counts(), what="fingerprinting the copy",
        ).items()
    }
    problems += drift_problems(repository, manifest, shrink_tolerance)
    return DeepChecks(tuple(problems), fingerprints)


def audit_copy(connection, progress: Reporter = NO_PROGRESS, *, rules=None) -> tuple[AuditVerdict, tuple[dict, ...]]:
    """`checks.run_audits` on a restored copy: (the verdict, the failing rules). `rules`:
    only these (ids), for a caller that proves the rest another way; default the catalogue."""
    import checks

    with progress.task("auditing the copy", unit="rules") as task:
        report = checks.run_audits(connection, rules=rules, on_progress=task.set)
    violations = tuple(
        {"rule": f.rule.id, "severity": f.rule.severity, "failing_rows": f.failing_rows}
        for f in report.violations
    )
    return AuditVerdict.of(report.ok), violations


def engine_check(connection) -> list[str]:
    """SQLite's own structural checks; PostgreSQL's is the full read the fingerprints make."""
    if connection.dialect.name != "sqlite":
        return []
    problems = []
    integrity = [row[0] for row in connection.exec_driver_sql("PRAGMA integrity_check")]
    if integrity != ["ok"]:
        problems.append("integrity_check: " + "; ".join(integrity[:5]))
    orphans = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if orphans:
        problems.append(f"foreign_key_check: {len(orphans)} rows point at missing parents (first in table {orphans[0][0]})")
    return problems


def drift_problems(repository: Repository, manifest: Manifest, tolerance: float) -> list[str]:
    """A table that emptied, or shrank by more than `tolerance`, since the previous backup."""
    earlier = [backup_id for backup_id in repository.backup_ids() if backup_id < manifest.id]
    for previous_id in reversed(earlier):
        try:
            previous = repository.read_manifest(previous_id)
        except Failure:
            continue  # a damaged neighbour is reported by its own verification
        if previous.source_identity != manifest.source_identity:
            continue  # another store: nothing to compare with
        problems = []
        for table, before in previous.row_counts().items():
            after = manifest.row_counts().get(table)
            if after is None or before == 0:
                continue
            if after == 0:
                problems.append(f"{table} emptied since backup {previous_id} ({before} rows then)")
            elif after < before * (1 - tolerance):
                problems.append(
                    f"{table} shrank by {100 * (before - after) / before:.1f}% since backup {previous_id} "
                    f"({before} -> {after} rows; shrink_tolerance is {tolerance:.0%})"
                )
        return problems
    return []
