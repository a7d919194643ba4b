"""Text renderers of the backup results (`integrity backup ...`)."""

from __future__ import annotations

from datetime import datetime, timezone

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from integrity.timeparse import age_text


def _megabytes(size: int | None) -> str:
    return "-" if size is None else f"{size / 1e6:,.1f} MB"


def _journal_problems(problems, console: Console, *, limit: int = 5) -> None:
    """Journal lines that were skipped: readers go on without them, retention refuses."""
    for problem in problems[:limit]:
        console.print(f"journal: {problem}", highlight=False, markup=False)
    if len(problems) > limit:
        console.print(f"journal: and {len(problems) - limit} more unreadable line(s)", highlight=False, markup=False)
    if problems:
        console.print("journal: `integrity backup prune` refuses until it can be read completely", highlight=False, markup=False)


def register(render_text) -> None:
    from integrity.backups.catalog import BackupDetail, Catalog, PinChange
    from integrity.backups.check import BackupCheckReport
    from integrity.backups.create import CreatedBackup
    from integrity.backups.prune import PruneResult
    from integrity.backups.verify import VerifyReport

    render_text.register(CreatedBackup, render_created)
    render_text.register(Catalog, render_catalog)
    render_text.register(BackupDetail, render_detail)
    render_text.register(VerifyReport, render_verify)
    render_text.register(PruneResult, render_prune)
    render_text.register(PinChange, render_pin)
    render_text.register(BackupCheckReport, render_check)
    from integrity.backups.copy import CopyResult

    render_text.register(CopyResult, render_copy)
    from integrity.backups.signing import GeneratedKey

    render_text.register(GeneratedKey, render_keygen)


def render_keygen(key, console: Console) -> None:
    console.print(f"wrote a new Ed25519 private key to {key.key_file} (mode 0600, key {key.key_id})", highlight=False, markup=False)
    console.print("keep it only on the hosts that make backups, never in the repository; add to integrity.toml:", highlight=False, markup=False)
    for line in key.config_lines():
        console.print(f"  {line}", highlight=False, markup=False)
    console.print("hosts that only read the repository need signing_public_key alone", highlight=False, markup=False)


def render_created(result, console: Console) -> None:
    manifest = result.manifest
    rows = ", ".join(f"{table} {count:,}" for table, count in manifest.row_counts().items())
    console.print(f"backup {manifest.id} created and verified in {result.seconds:.2f}s", highlight=False, markup=False)
    console.print(f"  {_megabytes(manifest.size)} ({_megabytes(manifest.files[0].raw_size)} raw), revision {manifest.revision}", highlight=False, markup=False)
    console.print(f"  rows: {rows}", highlight=False, markup=False)
    console.print(f"  {result.path}", highlight=False, markup=False)
    for copy in result.copies:
        outcome = f"NOT copied: {copy['problem']}" if copy["state"] == "failed" else f"{copy['state']}, verified there"
        console.print(f"  copy {copy['repository']}: {outcome}", highlight=False, markup=False)
    for reason in result.suspect_reasons:
        console.print(f"  SUSPECT: {reason}", highlight=False, markup=False)
    if result.suspect_reasons:
        console.print("  never chosen as `latest` nor counted for the RPO; see `integrity backup check` and runbooks/backup-failed.md",
                      highlight=False, markup=False)


def render_catalog(catalog, console: Console) -> None:
    if not catalog.backups:
        console.print(f"no backups in {catalog.repository}; take one with `integrity backup create`")
        _journal_problems(catalog.journal_problems, console)
        return
    now = datetime.now(timezone.utc)
    table = Table(show_header=True, header_style="bold")
    for column in ("id", "age", "size", "revision", "players", "results", "states", "label"):
        table.add_column(column, justify="right" if column in ("size", "players", "results") else "left")
    for backup in reversed(catalog.backups):
        table.add_row(
            backup.id,
            age_text(backup.created_at, now),
            _megabytes(backup.size),
            backup.revision or "-",
            f"{backup.rows.get('players', 0):,}",
            f"{backup.rows.get('results', 0):,}",
            ", ".join(backup.states),
            escape(backup.label or ""),
        )
    console.print(table)
    for backup in reversed(catalog.backups):
        if backup.manifest_problem:
            console.print(f"{backup.id}: {backup.manifest_problem}", highlight=False, markup=False)
    if catalog.leftovers:
        console.print(f"{len(catalog.leftovers)} leftover(s) of interrupted runs; `integrity backup prune` removes them")
    _journal_problems(catalog.journal_problems, console)


def render_detail(detail, console: Console) -> None:
    manifest = detail.manifest
    console.print(f"backup    {manifest.id}  ({', '.join(detail.states)})", highlight=False, markup=False)
    console.print(f"created   {manifest.created_at} ({age_text(manifest.created)})", highlight=False, markup=False)
    console.print(f"engine    {manifest.engine}   revision {manifest.revision}   identity {manifest.source_identity}", highlight=False, markup=False)
    console.print(f"source    {manifest.source_path or manifest.source_url}", highlight=False, markup=False)
    console.print(f"label     {manifest.label or '-'}", highlight=False, markup=False)
    if manifest.encryption:  # public recipients only: which identity opens it
        console.print(f"encrypted {manifest.encryption['scheme']} to {', '.join(manifest.encryption['recipients'])}",
                      highlight=False, markup=False)
    console.print(f"path      {detail.path}", highlight=False, markup=False)
    for label, moment in (("intact", detail.state.intact_at), ("deep-verified", detail.state.deep_verified_at),
                          ("clean", detail.state.clean_at), ("dirty", detail.state.dirty_at),
                          ("corrupt", detail.state.corrupt_at), ("deep-failed", detail.state.deep_failed_at)):
        if moment:
            console.print(f"{label:<13} last at {moment}", highlight=False, markup=False)
    for label, moment in (("failed", detail.state.failed_at),):
        if moment:
            console.print(f"{label:<13} first at {moment}", highlight=False, markup=False)
    for problem in detail.state.problems:
        console.print(f"problem   {problem}", highlight=False, markup=False)
    for reason in detail.state.suspect_reasons:
        console.print(f"suspect   {reason}", highlight=False, markup=False)
    _journal_problems(detail.journal_problems, console)
    table = Table(show_header=True, header_style="bold")
    table.add_column("table")
    table.add_column("rows", justify="right")
    table.add_column("aggregates")
    for name, info in manifest.tables.items():
        table.add_row(name, f"{info['rows']:,}", ", ".join(f"{k}={v}" for k, v in info["aggregates"].items()))
    console.print(table)
    files = Table(show_header=True, header_style="bold")
    for column in ("file", "size", "raw", "sha256"):
        files.add_column(column)
    for entry in manifest.files:
        files.add_row(entry.name, _megabytes(entry.size), _megabytes(entry.raw_size), entry.sha256[:16] + "...")
    console.print(files)


def render_verify(report, console: Console) -> None:
    table = Table(show_header=True, header_style="bold")
    for column in ("backup", "quick", "deep", "audit", "seconds", "detail"):
        table.add_column(column, overflow="fold")
    for result in report.results:
        detail = "; ".join((*result.problems, *result.known_problems))
        if result.violations:
            detail = "; ".join(f"{v['rule']}: {v['failing_rows']} rows" for v in result.violations)
        elif result.fingerprints and not detail:
            rows = sum(f["rows"] for f in result.fingerprints.values())
            seconds = sum(f["seconds"] for f in result.fingerprints.values())
            detail = f"fingerprinted {rows:,} rows at {rows / seconds if seconds else rows:,.0f} rows/s"
        table.add_row(result.backup_id, result.quick, result.deep or "-", result.audit or "-", f"{result.seconds:.2f}", escape(detail))
    console.print(table)
    _journal_problems(report.journal_problems, console)


def render_prune(result, console: Console) -> None:
    table = Table(show_header=True, header_style="bold")
    for column in ("backup", "decision", "why"):
        table.add_column(column, overflow="fold")
    deleted, skipped = set(result.deleted), {s["backup_id"]: s["reason"] for s in result.skipped}
    for decision in result.plan.decisions:
        if decision.keep:
            verdict = "keep"
        elif decision.backup_id in skipped:
            verdict = "kept (Object Lock)" if "Object Lock" in skipped[decision.backup_id] else "skipped (in use)"
        elif result.dry_run:
            verdict = "would delete"
        else:
            verdict = "deleted" if decision.backup_id in deleted else "delete"
        table.add_row(decision.backup_id, verdict, escape(", ".join(decision.reasons)))
    console.print(table)
    if result.removed_leftovers:
        console.print(f"removed leftovers of interrupted runs: {', '.join(result.removed_leftovers)}", highlight=False, markup=False)
    elif result.dry_run and result.plan.leftovers:
        console.print(f"would remove leftovers of interrupted runs: {', '.join(result.plan.leftovers)}", highlight=False, markup=False)


def render_copy(result, console: Console) -> None:
    for item in result.copied:
        console.print(f"copied {item['backup_id']} ({item['size'] / 1e6:.1f} MB in {item['seconds']:.1f}s) to "
                      f"{result.destination}, verified there", highlight=False, markup=False)
    if result.present:
        console.print(f"already in {result.destination}: {', '.join(result.present)}", highlight=False, markup=False)
    for item in result.failed:
        console.print(f"NOT copied {item['backup_id']}: {item['problem']}", highlight=False, markup=False)
    if not (result.copied or result.present or result.failed):
        console.print(f"nothing to copy: {result.destination} holds every intact backup of {result.source}",
                      highlight=False, markup=False)


def render_pin(change, console: Console) -> None:
    if change.pinned:
        console.print(f"pinned {change.backup_id} until {change.until}", highlight=False, markup=False)
    else:
        console.print(f"unpinned {change.backup_id}", highlight=False, markup=False)


def render_check(report, console: Console) -> None:
    table = Table(show_header=True, header_style="bold")
    for column in ("check", "state", "detail"):
        table.add_column(column, overflow="fold")
    for finding in report.findings:
        style = {"ok": "green", "warn": "yellow", "fail": "bold red"}[finding.state]
        table.add_row(finding.name, f"[{style}]{finding.state}[/]", escape(finding.detail))
    console.print(table)
