"""`integrity migrate dry-run|lint|rules|apply`: schema changes rehearsed on a copy."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from integrity.commands.params import MAX_ROWS_SHOWN, LockWait, Yes, backup_reference

migrate_app = typer.Typer(help="Rehearse schema changes on a snapshot copy, then apply them.", no_args_is_help=True)



class OutputFormat(str, Enum):
    text = "text"
    json = "json"
    markdown = "markdown"
    github = "github"
    html = "html"


class FailOn(str, Enum):
    error = "error"
    warning = "warning"


AlembicConfig = Annotated[Path | None, typer.Option(
    "--alembic-config", metavar="PATH",
    help="An alembic.ini, or a pyproject.toml with [tool.alembic] (default: the game's own history).",
)]
To = Annotated[str | None, typer.Option("--to", metavar="REV", help="The target revision (default: the single head).")]
Format = Annotated[OutputFormat, typer.Option("--format", metavar="text|json|markdown|github|html", help="Report format; markdown suits a pull-request comment, github prints workflow-command annotations on the revision files' lines, html is one self-contained page with the markdown report's facts.")]
FailOnOption = Annotated[FailOn, typer.Option("--fail-on", metavar="error|warning", help="Exit 3 on error findings (default), or also on warnings.")]


def _emit(ctx: typer.Context, report, output_format: OutputFormat) -> None:
    runtime = ctx.obj
    if output_format is OutputFormat.json:
        runtime.json_output = True
    if output_format is OutputFormat.markdown:
        from integrity.render.migrate import MarkdownReport

        report = MarkdownReport(report)
    if output_format is OutputFormat.github:
        from integrity.render.migrate import GithubAnnotations

        report = GithubAnnotations(report)
    if output_format is OutputFormat.html:
        from integrity.render.report_html import HtmlDryRunReport

        report = HtmlDryRunReport(report)
    runtime.emit(report)


@migrate_app.command("dry-run")
def dry_run(
    ctx: typer.Context,
    to: To = None,
    from_backup: Annotated[str | None, typer.Option("--from-backup", metavar="ID|latest", callback=backup_reference, help="Copy this backup (latest: the newest deep-verified one; the default on PostgreSQL).")] = None,
    from_live: Annotated[bool, typer.Option("--from-live", help="Copy the live database, only read (the default on SQLite).")] = False,
    snapshot: Annotated[str | None, typer.Option("--snapshot", metavar="PATH", help="Copy a snapshot nobody uses: a SQLite file, or a PostgreSQL database name or URL.")] = None,
    from_snapshot: Annotated[str | None, typer.Option("--from-snapshot", metavar="PATH|s3://BUCKET/KEY", help="A file written by `integrity snapshot export` (SQLite file, or pg_dump archive restored into a scratch database on the configured server), local or in a bucket.")] = None,
    alembic_config: AlembicConfig = None,
    output_format: Format = OutputFormat.text,
    fail_on: FailOnOption = FailOn.error,
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

    Exit 0 when clean (or nothing is pending); 2 for two sources or an unknown --format or
    --fail-on; 3 on error findings (or warnings with --fail-on warning); 4 when the dry run
    could not run (config, history, rights, source)."""
    from integrity import api

    report = api.migrate_dry_run(
        ctx.obj.invocation(lock_wait=lock_wait), to=to, from_backup=from_backup, from_live=from_live,
        snapshot=snapshot, from_snapshot=from_snapshot, alembic_config=alembic_config, fail_on=fail_on.value,
        keep_copy=keep_copy, sample_limit=limit,
    )
    _emit(ctx, report, output_format)


@migrate_app.command("lint")
def lint(
    ctx: typer.Context,
    to: To = None,
    start: Annotated[str | None, typer.Option("--from", metavar="REV", help="Lint the revisions after this one (default: the configured database's revision, else all).")] = None,
    alembic_config: AlembicConfig = None,
    output_format: Format = OutputFormat.text,
    fail_on: FailOnOption = FailOn.error,
    files: Annotated[list[Path] | None, typer.Argument(metavar="[REVISION_FILE]...", help="Lint only these revision files (each against the schema before it), as the pre-commit hook does; other files are left out.")] = None,
) -> None:
    """The static pass alone, without data: the revision graph, and each pending revision's
    operations (recorded through Alembic's offline mode for SQLite and PostgreSQL) against
    the rules of `integrity migrate rules`, and squawk's PostgreSQL rules on the SQL they
    render. Takes well under 2 seconds.

    Example: integrity migrate lint --alembic-config alembic.ini migrations/versions/0007_add_country.py

    Exit 0 when clean; 2 for an unknown --format or --fail-on, or files with --from/--to; 3
    on error findings (or warnings with --fail-on warning); 4 for a config or history that
    does not load."""
    from integrity import api

    report = api.migrate_lint(ctx.obj.invocation(), to=to, start=start, alembic_config=alembic_config,
                              fail_on=fail_on.value, files=files or None)
    _emit(ctx, report, output_format)


@migrate_app.command("rules")
def rules(ctx: typer.Context) -> None:
    """List every rule: its id (stable; usable in a revision's `ignore`), severity, phase
    (static or data), what it means and how to fix it. Exit 0."""
    from integrity import api

    ctx.obj.emit(api.migrate_rules(ctx.obj.invocation()))


@migrate_app.command("apply")
def apply(
    ctx: typer.Context,
    to: To = None,
    alembic_config: AlembicConfig = None,
    yes: Yes = False,
    lock_wait: LockWait = 0,
) -> None:
    """Upgrade the live database to --to (default: head), only with revisions whose dry run
    passed on this store with the same revision files. A pinned backup of live is taken
    first (roll back with `integrity restore ID`); the upgrade runs in one transaction;
    the audits run on live afterwards.

    Exit 0 when applied and clean (or nothing was pending); 3 when the audits fail after
    the upgrade; 4 without a passing dry run, without consent, or with a held lock; 5 when
    the upgrade failed (rolled back)."""
    from integrity import api

    ctx.obj.emit(api.migrate_apply(ctx.obj.invocation(lock_wait=lock_wait, yes=yes), to=to,
                                   alembic_config=alembic_config))


@migrate_app.command("check-applied")
def check_applied(ctx: typer.Context, alembic_config: AlembicConfig = None) -> None:
    """The deploy gate: check that every revision the live database is at passed a dry run
    on this store with these revision files (their SHA-256, as `migrate apply` checks).
    Call it in a deploy pipeline before traffic moves to the new code. The first revision
    (the schema `integrity init` created) needs no dry run.

    Exit 0 when they all passed; 3 naming each revision that did not; 4 when live is
    unreachable, has no revision, or is at one this history does not know."""
    from integrity import api

    ctx.obj.emit(api.migrate_check_applied(ctx.obj.invocation(), alembic_config=alembic_config))
