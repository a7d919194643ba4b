"""`integrity backup ...`: create, list, show, verify, prune, pin, unpin, keygen, check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from integrity.commands.params import MAX_LABEL_LENGTH, LockWait, backup_reference, label_text

backup_app = typer.Typer(help="Backups: create, list, verify, prune, pin, copy, keygen, check.", no_args_is_help=True)

@backup_app.callback()
def backup_options(
    ctx: typer.Context,
    repository: Annotated[str | None, typer.Option("--repository", metavar="NAME", help="Work on this repository: primary ([backups] repository, the default) or a copy's [[repositories]] name.")] = None,
) -> None:
    """Backups: create, list, verify, prune, pin, copy, keygen, check."""
    if repository is not None:
        ctx.obj.repository = repository


BackupId = Annotated[str, typer.Argument(metavar="ID", callback=backup_reference, help="A backup id, as `integrity backup list` shows it.")]


@backup_app.command("create")
def create(
    ctx: typer.Context,
    label: Annotated[str | None, typer.Option("--label", callback=label_text, help=f"A note stored in the manifest: one line, at most {MAX_LABEL_LENGTH} characters.")] = None,
    copy: Annotated[bool, typer.Option("--copy", help="Then copy it into every [[repositories]] copy, verified there (not when suspect).")] = False,
    lock_wait: LockWait = 0,
) -> None:
    """Take a consistent online backup of the game database, verified before it is called done.
    With --copy, exit 4 or 5 when a copy failed (the backup itself is kept)."""
    from integrity import api

    ctx.obj.emit(api.backup_create(ctx.obj.invocation(lock_wait=lock_wait), label=label, copy=copy))


@backup_app.command("list")
def list_backups(ctx: typer.Context) -> None:
    """The backups in the repository: id, age, size, revision, rows, states."""
    from integrity import api

    ctx.obj.emit(api.backup_list(ctx.obj.invocation()))


@backup_app.command("show")
def show(ctx: typer.Context, backup_id: BackupId) -> None:
    """One backup's manifest and states."""
    from integrity import api

    ctx.obj.emit(api.backup_show(ctx.obj.invocation(), backup_id=backup_id))


@backup_app.command("verify")
def verify(
    ctx: typer.Context,
    backup_id: Annotated[str | None, typer.Argument(metavar="[ID]", callback=backup_reference, help="The backup to verify (default: the newest).")] = None,
    latest: Annotated[bool, typer.Option("--latest", help="The newest backup (the default).")] = False,
    all_: Annotated[bool, typer.Option("--all", help="Every backup in the repository.")] = False,
    deep: Annotated[bool, typer.Option("--deep", help="Also restore into scratch, check, fingerprint, compare and audit.")] = False,
    lock_wait: LockWait = 0,
) -> None:
    """Verify backups: hashes and decompression; with --deep, a restore into scratch and its checks.
    Exit 5 when a backup is damaged or fails deep checks, 3 when it holds dirty data."""
    from integrity import api

    ctx.obj.emit(api.backup_verify(ctx.obj.invocation(lock_wait=lock_wait), backup_id=backup_id, latest=latest,
                                   all_=all_, deep=deep))


@backup_app.command("prune")
def prune(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be deleted and why; delete nothing.")] = False,
    lock_wait: LockWait = 0,
) -> None:
    """Apply the retention policy; never the newest good, newest deep-verified or pinned backups."""
    from integrity import api

    ctx.obj.emit(api.backup_prune(ctx.obj.invocation(lock_wait=lock_wait), dry_run=dry_run))


@backup_app.command("pin")
def pin(
    ctx: typer.Context,
    backup_id: BackupId,
    until: Annotated[str | None, typer.Option("--until", metavar="TIME", help="An ISO date/time (UTC) or a duration like 30d or 12h; default: for ever.")] = None,
    lock_wait: LockWait = 0,
) -> None:
    """Keep a backup out of retention."""
    from integrity import api
    from integrity.timeparse import parse_until

    ctx.obj.emit(api.backup_pin(ctx.obj.invocation(lock_wait=lock_wait), backup_id=backup_id,
                                until=parse_until(until) if until else None))


@backup_app.command("unpin")
def unpin(ctx: typer.Context, backup_id: BackupId, lock_wait: LockWait = 0) -> None:
    """Let retention consider a pinned backup again."""
    from integrity import api

    ctx.obj.emit(api.backup_unpin(ctx.obj.invocation(lock_wait=lock_wait), backup_id=backup_id))


@backup_app.command("keygen")
def keygen(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", metavar="PATH", help="Where to write the new private key (mode 0600, never overwritten, outside the repository).")],
) -> None:
    """Make an Ed25519 key pair that signs backup manifests: the private key goes to --out,
    the lines for integrity.toml are printed (the public key on every host that reads the
    repository, the key file only on hosts that make backups). Exit 4 when --out exists
    or is inside the repository.

    Example: integrity backup keygen --out /etc/integrity/signing.key"""
    from integrity import api

    ctx.obj.emit(api.backup_keygen(ctx.obj.invocation(), out=out))


@backup_app.command("copy")
def copy(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", metavar="NAME", help="The repository to copy into: a [[repositories]] name.")],
    backup_id: Annotated[str | None, typer.Argument(metavar="[ID|latest]", callback=backup_reference, help="The backup to copy.")] = None,
    all_missing: Annotated[bool, typer.Option("--all-missing", help="Every intact backup the destination does not hold yet.")] = False,
    lock_wait: LockWait = 0,
) -> None:
    """Copy verified backups into another repository (byte for byte, same id and signature),
    re-verifying every hash at the destination. Exit 5 when a backup failed on the way."""
    from integrity import api

    # The unswapped invocation: --repository names the source here, among all repositories.
    ctx.obj.emit(api.backup_copy(ctx.obj.base_invocation.given(lock_wait=lock_wait), to=to, backup_id=backup_id,
                                 all_missing=all_missing, source=ctx.obj.repository))


@backup_app.command("check")
def check(ctx: typer.Context) -> None:
    """Prove the backup path end to end: rights, tools, space, and a real backup written,
    read back and removed. Exit 0 or 4."""
    from integrity import api

    ctx.obj.emit(api.backup_check(ctx.obj.invocation()))
