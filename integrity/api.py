"""The library's API: every operation of the `integrity` tool as `api.name(inv, **options)`.

Alembic's `command` module is the model: the CLI (integrity/commands/), the scheduler's
jobs (integrity.jobs, run by integrity.scheduler) and the benchmarks call these functions
and nothing below them. `inv` (integrity.invocation.Invocation) carries what every call
shares: settings, the ledger run, the command name, the lock wait, consent and progress.
The options are each operation's own and mirror its command line.

What an operation records belongs here, not in a command: a dry run's pass is written to
the ledger by `migrate_dry_run` itself, so a programmatic dry run counts for `migrate_apply`
as one from the command line does; `backup_pin` takes the repository's writer lock itself.

Options that contradict each other are refused here with InvalidInput (exit 2, a usage
error), before anything is opened. Each function returns a result dataclass (or raises a
`Failure` carrying its exit code); rendering is integrity.render's business.

Library modules are imported inside the functions: `integrity --help` imports no
operation, and a scheduled job loads only what it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from game_core.errors import InvalidInput
from integrity.invocation import Invocation

AUDIT_ENGINES = ("sql", "pandera")
FAIL_ON = ("error", "warning")


def _one_of(option: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise InvalidInput(f"{option} {value!r} is not one of {', '.join(allowed)}")


def _at_most_one(given: dict[str, Any]) -> None:
    """Options that each name the thing to work on (`--from-live`, `--from-backup`): one at most."""
    chosen = [name for name, value in given.items() if value]
    if len(chosen) > 1:
        raise InvalidInput(f"{' and '.join(chosen)} cannot be given together; give one of {', '.join(given)}")


# ---------------------------------------------------------------- the install and its state


def init(inv: Invocation, *, config_path: Path, database_url_given: str | None = None):
    """Write a starter integrity.toml at `config_path`, create the state directory and the
    repository, and create the schema on an empty database."""
    from integrity.initialize import initialize

    return initialize(inv.settings, config_path, database_url_given=database_url_given)


def status(inv: Invocation):
    """Is the data safe now? The exit code is the worst state found."""
    from integrity.status import collect_status

    return collect_status(inv.settings, ledger=inv.ledger)  # the run's ledger: opened once per invocation


def history(inv: Invocation, *, kind: str | None = None, limit: int = 20):
    """The ledger's runs, newest first (`kind`: one command or command group)."""
    from integrity.ledger_report import read_history

    return read_history(inv.ledger, kind=kind, limit=limit)


def metrics(inv: Invocation):
    """The Prometheus text of the current state."""
    from integrity.prometheus import metrics_report

    return metrics_report(inv.settings, inv.ledger)


def report(inv: Invocation, *, since: str = "7d", now: datetime | None = None):
    """The evidence of the window `since` (24h, 7d, 4w) as a data model
    (integrity.evidence.Evidence): status, protection per repository, objectives, charts,
    drills, dry runs, audits and jobs. `integrity report --html` renders it."""
    from integrity.evidence import collect_evidence, parse_since

    window = parse_since(since)  # a bad window is exit 2 before anything is read
    return collect_evidence(inv.settings, inv.ledger, since=window, now=now)


def report_write(inv: Invocation, *, path: Path, page: str, evidence, seconds: float = 0.0):
    """Replace `path` atomically with `page` (the report of `evidence`, rendered by the
    caller: integrity.render is no library's business); exit 4 when it cannot be written."""
    from integrity.evidence import write_report

    return write_report(path, page, evidence, seconds=seconds)


# ---------------------------------------------------------------- notifications (issue 19)


def notify_test(inv: Invocation):
    """Send a test notification to every [notify] target; exit 4 when one failed. When
    every target answered, the delivery failures the ledger kept are forgotten."""
    from integrity.notify import send_test

    return send_test(inv.settings, inv.ledger)


def notify_status(inv: Invocation):
    """The [notify] targets (masked) and each condition's state as last notified."""
    from integrity.notify import notify_status as read_status

    return read_status(inv.settings, inv.ledger)


# ---------------------------------------------------------------- point-in-time recovery (issue 16)


def pitr_config(inv: Invocation):
    """The point-in-time engine's generated configuration, its commands and the server
    settings it needs; written under the state directory while `[pitr] enabled`."""
    from integrity.pitr.operations import pitr_config

    return pitr_config(inv.settings)


def pitr_status(inv: Invocation):
    """The restorable window, the replication lag against `[pitr] lag_objective_seconds`
    and the engine's errors."""
    from integrity.pitr.operations import pitr_status

    return pitr_status(inv.settings)


def pitr_replicate(inv: Invocation, *, stop=None):
    """The engine's replicator (Litestream) in the foreground, restarted when it dies, until
    SIGINT/SIGTERM or `stop` (a threading.Event) is set; each death goes to `inv.notify`."""
    from integrity.pitr.operations import pitr_replicate

    return pitr_replicate(inv.settings, notify=inv.notify, stop=stop)


def pitr_last_clean(inv: Invocation):
    """The latest restorable moment at which the audits pass: a bounded bisection in time
    between the newest clean full audit in the ledger (or the oldest restorable point) and
    the newest one, each probe a restore into scratch and the SQL audits; then what salvage
    would bring back from live after it. Each probe goes to `inv.notify` as it ends."""
    from integrity.pitr.operations import pitr_last_clean

    return pitr_last_clean(inv.settings, inv.ledger, notify=inv.notify)


# ---------------------------------------------------------------- backups


def backup_create(inv: Invocation, *, label: str | None = None, copy: bool = False):
    """A consistent online backup, quick-verified before it is called done. `copy`: then
    copied to every [[repositories]] copy (not when suspect), each outcome in `copies`."""
    from dataclasses import replace

    from integrity.backups.create import create_backup

    created = create_backup(inv.settings, label=label, lock_wait=inv.lock_wait, command=inv.command, progress=inv.progress)
    if not copy or created.suspect_reasons:
        return created
    from integrity.backups.copy import copy_to_each

    return replace(created, copies=copy_to_each(inv.settings, created.manifest.id, command=inv.command,
                                                 lock_wait=inv.lock_wait))


def backup_list(inv: Invocation):
    """The backups in the repository with their states (exit 4 when there is no repository)."""
    from integrity.backups.catalog import read_catalog
    from integrity.backups.repository import Repository

    repository = Repository.of(inv.settings)
    repository.require_exists()
    return read_catalog(repository)


def backup_show(inv: Invocation, *, backup_id: str):
    """One backup's manifest and states."""
    from integrity.backups.catalog import show_backup
    from integrity.backups.repository import Repository

    return show_backup(Repository.of(inv.settings), backup_id)


def backup_verify(inv: Invocation, *, backup_id: str | None = None, latest: bool = False, all_: bool = False,
                  deep: bool = False):
    """Quick verification (hashes, decompression) of one backup (default: the newest), the
    newest, or all; `deep` also restores into scratch, checks and audits."""
    _at_most_one({"ID": backup_id, "--latest": latest, "--all": all_})
    from integrity.backups.verify import verify_backups

    return verify_backups(inv.settings, backup_id=backup_id, latest=latest, all_=all_, deep=deep,
                          command=inv.command, lock_wait=inv.lock_wait, progress=inv.progress)


def backup_prune(inv: Invocation, *, dry_run: bool = False):
    """Apply the retention policy (`dry_run`: say what would go, delete nothing)."""
    from integrity.backups.prune import prune

    return prune(inv.settings, dry_run=dry_run, lock_wait=inv.lock_wait, command=inv.command)


def backup_copy(inv: Invocation, *, to: str, backup_id: str | None = None, all_missing: bool = False,
                source: str | None = None):
    """Copy a backup (or every intact one the destination lacks) from `source` (default:
    the primary) into the repository named `to`, verified again there."""
    from integrity.backups.copy import copy_backups
    from integrity.settings import PRIMARY_REPOSITORY

    return copy_backups(inv.settings, to=to, backup_id=backup_id, all_missing=all_missing,
                        source_name=source or PRIMARY_REPOSITORY, command=inv.command, lock_wait=inv.lock_wait)


def backup_pin(inv: Invocation, *, backup_id: str, until: datetime | None = None):
    """Keep a backup out of retention, for ever or `until`, under the repository's writer lock."""
    from integrity.backups.catalog import pin
    from integrity.backups.repository import Repository

    repository = Repository.of(inv.settings)
    with repository.writer_lock(command=inv.command, wait_seconds=inv.lock_wait):
        return pin(repository, backup_id, until=until)


def backup_unpin(inv: Invocation, *, backup_id: str):
    """Let retention consider a pinned backup again, under the repository's writer lock."""
    from integrity.backups.catalog import unpin
    from integrity.backups.repository import Repository

    repository = Repository.of(inv.settings)
    with repository.writer_lock(command=inv.command, wait_seconds=inv.lock_wait):
        return unpin(repository, backup_id)


def backup_keygen(inv: Invocation, *, out: Path):
    """A new Ed25519 key pair for signing manifests: the private key written to `out`."""
    from integrity.backups.signing import generate_key

    return generate_key(out, repository=inv.settings.backups.repository)


def backup_check(inv: Invocation):
    """Prove the backup path end to end: rights, tools, space, a real backup written and removed."""
    from integrity.backups.check import check_backup_path

    return check_backup_path(inv.settings, command=inv.command)


# ---------------------------------------------------------------- audits and probes


def audit(inv: Invocation, *, rules: Sequence[str] | None = None, tables: Sequence[str] | None = None,
          engine: str = "sql", since_last: bool = False, chunk_size: int | None = None, samples: int | None = None):
    """The audits on the guarded database (read only), recorded in the audit history."""
    _one_of("--engine", engine, AUDIT_ENGINES)
    from integrity.audits import run_audit

    return run_audit(inv.settings, inv.ledger, run_id=inv.run_id, rules=list(rules) if rules else rules,
                     tables=list(tables) if tables else tables, engine=engine, since_last=since_last,
                     chunk_size=chunk_size, samples=samples)


def audit_history(inv: Invocation, *, rule: str | None = None, limit: int = 20):
    """The recorded audit runs, newest first (`rule`: one rule's failing rows run by run)."""
    from integrity.audits import read_audit_history

    return read_audit_history(inv.ledger, rule=rule, limit=limit)


def probe(inv: Invocation, *, sample: int | None = None, timeout: float | None = None):
    """The game's reads for a sample of players and the canaries; None: the probe's defaults."""
    from integrity.probe import DEFAULT_SAMPLE, DEFAULT_TIMEOUT_SECONDS, run_probe

    return run_probe(inv.settings, sample=DEFAULT_SAMPLE if sample is None else sample,
                     timeout=DEFAULT_TIMEOUT_SECONDS if timeout is None else timeout, command=inv.command)


# ---------------------------------------------------------------- recovery


def drill(inv: Invocation, *, backup_id: str | None = None, at: datetime | str | None = None,
          from_repository: str | None = None, alternate: bool = False):
    """Restore a backup (default: the newest restorable) into scratch, verify, audit, compare
    with live, and predict a full restore's time. `at` (a datetime, text as restore's
    --to-time takes it, or "random": a moment drawn from the archive's window) drills the
    point-in-time archive at that moment instead. `from_repository`: a copy's name
    ([[repositories]]) instead of the primary; `alternate`: the repository whose turn it is
    (the scheduled drill rehearses each in rotation)."""
    _at_most_one({"--backup": backup_id, "--at": at})
    _at_most_one({"--at": at, "--from": from_repository})
    if alternate and from_repository is None and not at:
        from integrity.backups.repositories import repository_in_turn

        from_repository = repository_in_turn(inv.settings)
    if from_repository is not None:
        from dataclasses import replace

        from integrity.backups.repositories import settings_for

        inv = replace(inv, settings=settings_for(inv.settings, from_repository))
    if at:
        from integrity.recovery.drill import RANDOM_MOMENT, run_point_in_time_drill
        from integrity.timeparse import parse_moment

        moment = at if at == RANDOM_MOMENT or not isinstance(at, str) else parse_moment(at, option="--at")
        return run_point_in_time_drill(inv.settings, moment, asked=f"--at {at}" if isinstance(at, str) else "--at",
                                       progress=inv.progress)
    from integrity.recovery.drill import run_drill

    return run_drill(inv.settings, backup_id=backup_id, lock_wait=inv.lock_wait, command=inv.command,
                     ledger=inv.ledger, progress=inv.progress)


def diff(inv: Invocation, *, backup: str, tables: Sequence[str] | None = None, sample_limit: int = 10):
    """What differs between a backup (an id, or latest) and live, per table, by primary key."""
    from integrity.recovery.diff import diff_backup

    return diff_backup(inv.settings, backup, tables=tables or None, sample_limit=sample_limit,
                       command=inv.command, lock_wait=inv.lock_wait)


def restore(inv: Invocation, *, backup: str | None = None, to_time: datetime | str | None = None,
            before_migration: str | None = None, last_clean: bool = False, dry_run: bool = False,
            safety_backup: bool = True, terminate_connections: bool = False, force_other_source: bool = False,
            keep_newer: bool = False):
    """Restore over live after `inv.consent`: a backup (an id, or latest), the database as
    it was at `to_time` (a datetime, or text: an ISO time, UTC unless it says, or "10
    minutes ago"), as it was just before `before_migration` was applied, or at the last
    moment the audits pass (`last_clean`: `restore_last_clean`), the last three through the
    point-in-time engine (`restore_point_in_time`). `dry_run` returns the plan (with the
    rows that would change) and changes nothing."""
    given = {"ID|latest": backup, "--to-time": to_time, "--before-migration": before_migration,
             "--last-clean": last_clean}
    chosen = [name for name, value in given.items() if value]
    if len(chosen) != 1:
        raise InvalidInput("give exactly one of ID|latest, --to-time TIME, --before-migration REVISION or --last-clean"
                           + (f" ({' and '.join(chosen)} were given)" if chosen else ""))
    _restore_options_agree(safety_backup=safety_backup, keep_newer=keep_newer)  # a usage conflict before any work
    same = {"dry_run": dry_run, "safety_backup": safety_backup, "terminate_connections": terminate_connections,
            "force_other_source": force_other_source, "keep_newer": keep_newer}
    if to_time:
        from integrity.timeparse import parse_moment

        moment = parse_moment(to_time) if isinstance(to_time, str) else to_time
        asked = f"--to-time {to_time if isinstance(to_time, str) else moment.isoformat()}"
        return restore_point_in_time(inv, moment, asked=asked, **same)
    if before_migration:
        from integrity.recovery.point_in_time import moment_before_migration
        from integrity.pitr import require_enabled

        require_enabled(inv.settings)  # "pitr is off" first: the ledger's answer would not help
        found = moment_before_migration(inv.settings, inv.ledger, before_migration)
        return restore_point_in_time(inv, found.moment, asked=f"--before-migration {before_migration}",
                                     migration=found, **same)
    if last_clean:
        return restore_last_clean(inv, **same)
    from integrity.recovery.restore import RestoreOptions, apply_restore, plan_restore

    options = RestoreOptions(
        backup=backup, safety_backup=safety_backup, terminate_connections=terminate_connections,
        force_other_source=force_other_source, keep_newer=keep_newer, lock_wait=inv.lock_wait, command=inv.command,
    )
    plan = plan_restore(inv.settings, options, row_diff=dry_run)
    if dry_run:
        return plan
    return apply_restore(inv.settings, plan, options, consent=inv.consent, notify=inv.notify)


def _restore_options_agree(*, safety_backup: bool, keep_newer: bool) -> None:
    if keep_newer and not safety_backup:
        # The rows to keep are re-applied from the safety backup: without one there are none.
        raise InvalidInput("--keep-newer re-applies rows from the safety backup; it cannot be combined with "
                           "--no-safety-backup")


def restore_point_in_time(inv: Invocation, moment: datetime, *, dry_run: bool = False, safety_backup: bool = True,
                          terminate_connections: bool = False, force_other_source: bool = False,
                          keep_newer: bool = False, asked: str | None = None, migration=None):
    """Restore the database as it was at `moment` (aware, or naive meaning UTC) from the
    point-in-time engine's archive: restored into scratch, materialised as a backup of
    purpose "point-in-time", then restored like any backup (plan, consent, safety backup,
    staging, checks, swap, salvage with `keep_newer`). `dry_run` restores into scratch only
    and returns a preview against live; nothing is written, the repository included.
    `asked`: how the moment was chosen, recorded in the backup's manifest ("--last-clean"); `migration`:
    the `MigrationMoment` it came from (integrity.recovery.point_in_time), shown with the result."""
    _restore_options_agree(safety_backup=safety_backup, keep_newer=keep_newer)
    from datetime import timezone

    from integrity.recovery.point_in_time import restore_point_in_time as restore_to_moment
    from integrity.recovery.restore import RestoreOptions

    moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    options = RestoreOptions(
        backup="", safety_backup=safety_backup, terminate_connections=terminate_connections,
        force_other_source=force_other_source, keep_newer=keep_newer, lock_wait=inv.lock_wait, command=inv.command,
    )
    return restore_to_moment(inv.settings, moment, options, dry_run=dry_run, consent=inv.consent, notify=inv.notify,
                             asked=asked, migration=migration)


def restore_last_clean(inv: Invocation, *, dry_run: bool = False, safety_backup: bool = True,
                       terminate_connections: bool = False, force_other_source: bool = False, keep_newer: bool = False):
    """`restore --last-clean`: `pitr_last_clean`'s search (each probe to `inv.notify`), then
    `restore_point_in_time` of the moment it found. When the newest restorable point is
    clean, or nothing in the window is, the search alone is returned and live is not
    touched (exit 0 with nothing to go back for; exit 3)."""
    _restore_options_agree(safety_backup=safety_backup, keep_newer=keep_newer)
    from integrity.backups.repository import Repository
    from integrity.pitr import require_enabled
    from integrity.pitr.operations import LastCleanRestore, pitr_last_clean
    from integrity.pitr.search import moment_text

    require_enabled(inv.settings)
    # What would stop the restore stops it before the search (many restores on a big database).
    Repository.of(inv.settings).require_exists()
    if not dry_run:
        inv.consent.require_possible("restore the database as it was at the last clean moment")
    search = pitr_last_clean(inv.settings, inv.ledger, notify=inv.notify, count_after=False)
    if search.found is None or search.first_dirty is None:
        return search
    asked = f"--last-clean (first dirty {moment_text(search.first_dirty)}, {search.restores} restores)"
    restored = restore_point_in_time(inv, search.found, dry_run=dry_run, safety_backup=safety_backup,
                                     terminate_connections=terminate_connections,
                                     force_other_source=force_other_source, keep_newer=keep_newer, asked=asked)
    return LastCleanRestore(search, restored)


def salvage(inv: Invocation, *, from_backup: str | None = None, from_database: str | None = None,
            dry_run: bool = False):
    """Re-apply rows only the pre-restore data holds (a backup, or PostgreSQL's kept database)."""
    if (from_backup is None) == (from_database is None):
        raise InvalidInput("give exactly one of --from-backup ID or --from-database NAME")
    from integrity.recovery.salvage import salvage_from

    return salvage_from(inv.settings, backup_id=from_backup, database=from_database, dry_run=dry_run,
                        consent=inv.consent, lock_wait=inv.lock_wait, command=inv.command)


def repair_progress(inv: Invocation, *, dry_run: bool = False):
    """Rebuild progress and personal_bests from results for the players whose caches are wrong."""
    from integrity.recovery.repair import repair_progress as repair

    return repair(inv.settings, dry_run=dry_run, consent=None if dry_run else inv.consent,
                  lock_wait=inv.lock_wait, command=inv.command)


# ---------------------------------------------------------------- migrations


def migrate_dry_run(inv: Invocation, *, to: str | None = None, from_backup: str | None = None,
                    from_live: bool = False, snapshot: str | None = None, alembic_config: Path | None = None,
                    fail_on: str = "error", keep_copy: bool = False, sample_limit: int = 10,
                    from_snapshot: Path | str | None = None):
    """Rehearse the pending revisions on a copy (of a backup, live, a snapshot database or
    a `snapshot export` file) and record the verdict in `inv.ledger`, where `migrate_apply`
    looks for a passing dry run."""
    _at_most_one({"--from-backup": from_backup, "--from-live": from_live, "--snapshot": snapshot,
                  "--from-snapshot": from_snapshot})
    _one_of("--fail-on", fail_on, FAIL_ON)
    from contextlib import ExitStack
    from dataclasses import replace

    from integrity.migrate.dry_run import dry_run
    from integrity.migrate.snapshot import BACKUP, LIVE, SNAPSHOT, SourceChoice

    choice = None
    if from_backup:
        choice = SourceChoice(BACKUP, backup_id=from_backup)
    elif from_live:
        choice = SourceChoice(LIVE)
    elif snapshot:
        choice = SourceChoice(SNAPSHOT, snapshot=snapshot)
    with ExitStack() as opened:
        if from_snapshot:
            from integrity.snapshots.export import opened_snapshot
            from integrity.storage.location import is_s3_url

            local = from_snapshot
            if is_s3_url(str(from_snapshot)):  # downloaded into the state directory, removed afterwards
                from integrity.snapshots import remote

                url = remote.snapshot_url(str(from_snapshot), "--from-snapshot")
                local = opened.enter_context(remote.downloaded(inv.settings, url))
            # The file made ready as a `--snapshot` (a pg_dump archive restored into a scratch
            # database, dropped afterwards).
            choice = SourceChoice(SNAPSHOT, snapshot=opened.enter_context(opened_snapshot(inv.settings, Path(local))))
        report = dry_run(inv.settings, alembic_config=alembic_config, to=to, choice=choice, fail_on=fail_on,
                         keep_copy=keep_copy, sample_limit=sample_limit, command=inv.command,
                         lock_wait=inv.lock_wait, progress=inv.progress)
    if from_snapshot and report.source is not None:
        report = replace(report, source=f"snapshot file {from_snapshot}")  # the file, not its scratch copy
    if report.data_pass and inv.ledger is not None:
        _record_dry_run(inv, report)
    return report


def _record_dry_run(inv: Invocation, report) -> None:
    from integrity.ledger import utc_now
    from integrity.migrate.records import DryRunRecord, record_dry_run

    record_dry_run(inv.ledger, DryRunRecord(
        run_id=inv.run_id, finished_at=utc_now(), store_identity=report.store_identity, engine=report.engine,
        source=report.source, start_revision=report.start_revision, target_revision=report.target_revision,
        revisions=report.revision_hashes(), passed=report.passed, errors=report.errors, warnings=report.warnings,
    ))


def migrate_lint(inv: Invocation, *, to: str | None = None, start: str | None = None,
                 alembic_config: Path | None = None, fail_on: str = "error", files: list[Path] | None = None):
    """The static pass alone: the revision graph and each pending revision's operations
    (with `files`: the revisions among them, each against the schema before it)."""
    _one_of("--fail-on", fail_on, FAIL_ON)
    if files:
        if to or start:
            raise InvalidInput("give revision files or --from/--to, not both: files lint exactly those revisions and the schema before them")
        from integrity.migrate.changed import lint_files

        return lint_files(inv.settings, files, alembic_config=alembic_config, fail_on=fail_on)
    from integrity.migrate.dry_run import lint

    return lint(inv.settings, alembic_config=alembic_config, to=to, start=start, fail_on=fail_on)


def migrate_rules(inv: Invocation):
    """Every rule of the dry run and lint: id, severity, phase, meaning, fix."""
    from integrity.migrate.rules import rules_listing

    return rules_listing()


def migrate_apply(inv: Invocation, *, to: str | None = None, alembic_config: Path | None = None):
    """Upgrade live to `to` (default: head) with revisions whose dry run passed, after a
    pinned backup and `inv.consent`."""
    from integrity.migrate.apply import apply_migrations

    return apply_migrations(inv.settings, inv.ledger, alembic_config=alembic_config, to=to, consent=inv.consent,
                            command=inv.command, lock_wait=inv.lock_wait)


def migrate_check_applied(inv: Invocation, *, alembic_config: Path | None = None):
    """The deploy gate: whether every revision live is at passed a dry run on this store
    with these revision files (exit 3 naming the ones that did not)."""
    from integrity.migrate.gate import check_applied

    return check_applied(inv.settings, inv.ledger, alembic_config=alembic_config)


# ---------------------------------------------------------------- snapshots for CI (issue 18)


def snapshot_export(inv: Invocation, *, to: str, sanitize: bool = False, from_backup: str | None = None,
                    key_file: Path | None = None, overwrite: bool = False):
    """Write a consistent copy of live (or of a backup: an id, or latest for the newest
    restorable one) to the local file `to`, with the columns the model marks personal
    replaced by stable pseudonyms when `sanitize` (keyed by `key_file`'s bytes, else by a
    random key used once). Live is only read."""
    if key_file is not None and not sanitize:
        raise InvalidInput("--key-file keys the pseudonyms of --sanitize; add --sanitize or leave --key-file out")
    from integrity.snapshots.export import export_snapshot, read_key_file

    key = read_key_file(key_file) if key_file is not None else None
    return export_snapshot(inv.settings, to=to, sanitize=sanitize, from_backup=from_backup, key=key,
                           key_source=f"--key-file {key_file}" if key_file is not None else None,
                           overwrite=overwrite, command=inv.command, lock_wait=inv.lock_wait, progress=inv.progress)


# ---------------------------------------------------------------- the scheduler


def schedule_list(inv: Invocation):
    """Every job: schedule, next fire, last run and outcome, last success."""
    from integrity.scheduler.listing import list_schedule

    return list_schedule(inv.settings)


def schedule_run(inv: Invocation):
    """Run the [schedule] jobs until a signal; each job is one of these operations
    (`perform_job`), with an invocation of its own built by the scheduler."""
    from integrity.scheduler.daemon import run_scheduler

    return run_scheduler(inv.settings, perform=perform_job)


def perform_job(inv: Invocation, job) -> Any:
    """Perform a scheduled job (integrity.jobs.Job): its operation with its options."""
    operation = globals()[job.operation]
    return operation(inv, **job.options)
