"""`integrity migrate dry-run|lint|rules|apply`: schema changes rehearsed on a copy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from integrity.commands.params import MAX_LOCK_WAIT_SECONDS, MAX_ROWS_SHOWN, backup_reference

migrate_app = typer.Typer(help="Rehearse schema changes on a snapshot copy, then apply them.", no_args_is_help=True)

FORMATS = ("text", "json", "markdown")

AlembicConfig = Annotated[Path | None, typer.Option(
    "--alembic-config", metavar="PATH",
    help="An alembic.ini, or a pyproject.toml with [tool.alembic] (default: the game's own history).",
)]
To = Annotated[str | None, typer.Option("--to", metavar="REV", help="The target revision (default: the single head).")]
Format = Annotated[str, typer.Option("--format", metavar="text|json|markdown", help="Report format; markdown suits a pull-request comment.")]
FailOn = Annotated[str, typer.Option("--fail-on", metavar="error|warning", help="Exit 3 on error findings (default), or also on warnings.")]
LockWait = Annotated[float, typer.Option("--lock-wait", min=0, max=MAX_LOCK_WAIT_SECONDS, metavar="SECONDS", help="Wait this long for a lock held by another run (default: fail at once, exit 4).")]


def _emit(ctx: typer.Context, report, output_format: str) -> None:
    from integrity.errors import ConfigInvalid

    if output_format not in FORMATS:
        raise ConfigInvalid(f"--format {output_format!r} is not one of {', '.join(FORMATS)}")
    runtime = ctx.obj
    if output_format == "json":
        runtime.json_output = True
    if output_format == "markdown":
        from integrity.report_migrate import MarkdownReport

        report = MarkdownReport(report)
    runtime.emit(report)


@migrate_app.command("dry-run")
def dry_run(
    ctx: typer.Context,
    to: To = None,
    from_backup: Annotated[str | None, typer.Option("--from-backup", metavar="ID|latest", callback=backup_reference, help="Copy this backup (latest: the newest deep-verified one; the default on PostgreSQL).")] = None,
    from_live: Annotated[bool, typer.Option("--from-live", help="Copy the live database, only read (the default on SQLite).")] = False,
    snapshot: Annotated[str | None, typer.Option("--snapshot", metavar="PATH", help="Copy a snapshot nobody uses: a SQLite file, or a PostgreSQL database name or URL.")] = None,
    alembic_config: AlembicConfig = None,
    output_format: Format = "text",
    fail_on: FailOn = "error",
    keep_copy: Annotated[bool, typer.Option("--keep-copy", help="Keep both copies (before and migrated) and print where they are.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=0, max=MAX_ROWS_SHOWN, metavar="N", help="Sample keys shown per finding.")] = 10,
    lock_wait: LockWait = 0,
) -> None:
    """Run the pending revisions on a snapshot copy of real data and prove what they did:
    static rules, the upgrade timed per revision and statement (PostgreSQL: locks and
    rewrites), schema and content diff keyed by primary key, audits before and after, and a
    downgrade round trip. The source is never written; the copies are removed unless
    --keep-copy. The result is recorded in the ledger with the revision files' hashes, for
    `migrate apply`.

    Exit 0 when clean (or nothing is pending); 3 on error findings (or warnings with
    --fail-on warning); 4 when the dry run could not run (config, history, rights, source)."""
    from integrity.errors import ConfigInvalid
    from integrity.migrate.dry_run import dry_run as run_dry_run
    from integrity.migrate.records import DryRunRecord, record_dry_run
    from integrity.migrate.snapshot import BACKUP, LIVE, SNAPSHOT, SourceChoice

    chosen = [name for name, given in (("--from-backup", from_backup), ("--from-live", from_live), ("--snapshot", snapshot)) if given]
    if len(chosen) > 1:
        raise ConfigInvalid(f"{' and '.join(chosen)} name two sources; give one of --from-backup, --from-live, --snapshot")
    choice = None
    if from_backup:
        choice = SourceChoice(BACKUP, backup_id=from_backup)
    elif from_live:
        choice = SourceChoice(LIVE)
    elif snapshot:
        choice = SourceChoice(SNAPSHOT, snapshot=snapshot)
    runtime = ctx.obj
    report = run_dry_run(
        runtime.settings, alembic_config=alembic_config, to=to, choice=choice, fail_on=fail_on,
        keep_copy=keep_copy, sample_limit=limit, command=runtime.command, lock_wait=lock_wait,
        progress=runtime.progress,
    )
    if report.data_pass and runtime.ledger is not None:
        from integrity.ledger import utc_now

        record_dry_run(runtime.ledger, DryRunRecord(
            run_id=runtime.run_id, finished_at=utc_now(), store_identity=report.store_identity, engine=report.engine,
            source=report.source, start_revision=report.start_revision, target_revision=report.target_revision,
            revisions=report.revision_hashes(), passed=report.passed, errors=report.errors, warnings=report.warnings,
        ))
    _emit(ctx, report, output_format)


@migrate_app.command("lint")
def lint(
    ctx: typer.Context,
    to: To = None,
    start: Annotated[str | None, typer.Option("--from", metavar="REV", help="Lint the revisions after this one (default: the configured database's revision, else all).")] = None,
    alembic_config: AlembicConfig = None,
    output_format: Format = "text",
    fail_on: FailOn = "error",
) -> None:
    """The static pass alone, without data: the revision graph, and each pending revision's
    operations (recorded through Alembic's offline mode for SQLite and PostgreSQL) against
    the rules of `integrity migrate rules`. Takes well under 2 seconds.

    Exit 0 when clean; 3 on error findings (or warnings with --fail-on warning); 4 for a
    config or history that does not load."""
    from integrity.migrate.dry_run import lint as run_lint

    _emit(ctx, run_lint(ctx.obj.settings, alembic_config=alembic_config, to=to, start=start, fail_on=fail_on), output_format)


@migrate_app.command("rules")
def rules(ctx: typer.Context) -> None:
    """List every rule: its id (stable; usable in a revision's `ignore`), severity, phase
    (static or data), what it means and how to fix it. Exit 0."""
    from integrity.migrate.rules import rules_listing

    ctx.obj.emit(rules_listing())


@migrate_app.command("apply")
def apply(
    ctx: typer.Context,
    to: To = None,
    alembic_config: AlembicConfig = None,
    yes: Annotated[bool, typer.Option("--yes", help="Consent without the typed confirmation (required with --no-input).")] = False,
    lock_wait: LockWait = 0,
) -> None:
    """Upgrade the live database to --to (default: head), only with revisions whose dry run
    passed on this store with the same revision files. A pinned backup of live is taken
    first (roll back with `integrity restore ID`); the upgrade runs in one transaction;
    the audits run on live afterwards.

    Exit 0 when applied and clean (or nothing was pending); 3 when the audits fail after
    the upgrade; 4 without a passing dry run, without consent, or with a held lock; 5 when
    the upgrade failed (rolled back)."""
    from integrity.migrate.apply import apply_migrations
    from integrity.recovery.consent import consent_for

    runtime = ctx.obj
    runtime.emit(apply_migrations(
        runtime.settings, runtime.ledger, alembic_config=alembic_config, to=to,
        consent=consent_for(runtime, yes=yes), command=runtime.command, lock_wait=lock_wait,
    ))
