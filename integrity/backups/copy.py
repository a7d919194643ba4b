"""`integrity backup copy`: a verified backup into another repository, verified again there.

The copy is byte for byte: the data files, the manifest, its hash and its signature
exactly as the source holds them (a copy is the same backup, signed by the same key, with
the same id), published at the destination as any new backup is (a directory renamed
into place, or the manifest created last and create-only on object storage). Every data
file is hashed on the way against the manifest, and read back from the destination
afterwards (`quick_verify` there): what a later restore from the copy will read is what was
checked. Between two buckets of one server the bytes never cross this host: the server
copies each object and returns the SHA-256 of what it wrote, checked against the manifest. Only intact backups are copied; one that fails on the way is reported, and the
destination keeps nothing of it.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from game_core.errors import ExitCode, Failure, InvalidInput
from integrity.backups.archive import CHUNK
from integrity.backups.catalog import LATEST, read_catalog
from integrity.backups.repository import BackupCorrupt, BackupNotFound, Manifest, RepositoryUnusable
from integrity.backups.repositories import open_repository
from integrity.backups.verify import quick_verify
from integrity.settings import PRIMARY_REPOSITORY, Settings


@dataclass(frozen=True)
class CopyResult:
    source: str
    destination: str
    copied: tuple[dict, ...] = ()
    present: tuple[str, ...] = ()  # already in the destination: nothing to do
    failed: tuple[dict, ...] = ()

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.VERIFICATION_FAILED if self.failed else ExitCode.OK

    def summary(self) -> dict:
        return {"source": self.source, "destination": self.destination, "copied": list(self.copied),
                "present": list(self.present), "failed": list(self.failed)}


def copy_backups(settings: Settings, *, to: str, backup_id: str | None = None, all_missing: bool = False,
                 source_name: str = PRIMARY_REPOSITORY, command: str = "backup copy", lock_wait: float = 0) -> CopyResult:
    if (backup_id is None) == (not all_missing):
        raise InvalidInput("name one backup to copy (an ID or latest) or give --all-missing, not both")
    if to == source_name:
        raise InvalidInput(f"--to {to} is the repository the backups come from; name another (see [[repositories]])")
    source = open_repository(settings, source_name)
    destination = open_repository(settings, to)
    source.require_exists()
    destination.require_exists()
    catalog = read_catalog(source)
    copyable = {b.id: b for b in catalog.backups if _copyable(b)}
    if all_missing:
        wanted = [i for i in copyable if not destination.has_backup(i)]
    else:
        wanted = [_chosen(catalog, backup_id, source.location)]
        if wanted[0] not in copyable:
            info = next(b for b in catalog.backups if b.id == wanted[0])
            raise BackupCorrupt(f"backup {wanted[0]} is not copied: {_not_copyable(info)}; verify it with "
                                "`integrity backup verify` first")
    copied, present, failed = [], [], []
    with destination.writer_lock(command=command, wait_seconds=lock_wait):
        for chosen in wanted:
            if destination.has_backup(chosen):
                present.append(chosen)
                continue
            started = time.perf_counter()
            try:
                with source.reading(chosen, command=command, wait_seconds=lock_wait):
                    manifest = source.read_manifest(chosen)
                    checked_by_server = _server_side(source, destination, manifest)
                    if not checked_by_server:
                        _transfer(source, destination, manifest)
                verified = destination.read_manifest(chosen) if checked_by_server else quick_verify(destination, chosen)
            except BackupCorrupt as exc:
                failed.append({"backup_id": chosen, "problem": str(exc)})
                continue
            destination.record_quick_check(chosen, problem=None, by=command)
            copied.append({"backup_id": chosen, "size": verified.size, "seconds": round(time.perf_counter() - started, 3)})
    return CopyResult(source.location, destination.location, tuple(copied), tuple(present), tuple(failed))


def copy_to_each(settings: Settings, backup_id: str, *, command: str, lock_wait: float = 0) -> tuple[dict, ...]:
    """A new backup into every copy repository: one failing (unreachable, full) is reported
    and the others still get theirs."""
    outcomes = []
    for entry in settings.repositories:
        try:
            result = copy_backups(settings, to=entry.name, backup_id=backup_id, command=command, lock_wait=lock_wait)
        except Failure as exc:
            outcomes.append({"repository": entry.name, "state": "failed", "problem": str(exc),
                             "exit_code": int(exc.exit_code)})
            continue
        if result.failed:
            outcomes.append({"repository": entry.name, "state": "failed", "problem": result.failed[0]["problem"],
                             "exit_code": int(ExitCode.VERIFICATION_FAILED)})
        else:
            outcomes.append({"repository": entry.name, "state": "copied" if result.copied else "present",
                             "problem": None, "exit_code": 0})
    return tuple(outcomes)


def _copyable(info) -> bool:
    return _not_copyable(info) is None


def _not_copyable(info) -> str | None:
    state = info.state
    if info.manifest_problem is not None:
        return f"its manifest is damaged ({info.manifest_problem})"
    if state.corrupt or not state.intact:
        return "it is not verified intact"
    if state.failed or state.deep_failed:
        return "a restore, drill or deep verification of it failed"
    return None


def _chosen(catalog, backup_id: str, where: str) -> str:
    if backup_id == LATEST:
        newest = catalog.newest_restorable()
        if newest is None:
            raise BackupNotFound(f"no restorable backup in {where} to copy; take one with `integrity backup create`")
        return newest.id
    if backup_id not in {b.id for b in catalog.backups}:
        raise BackupNotFound(f"no backup {backup_id} in {where}; list them with `integrity backup list`")
    return backup_id


def _server_side(source, destination, manifest: Manifest) -> bool:
    """Between two buckets of one server, the server copies and hashes what it wrote (see
    ObjectRepository.publish_server_side); True when that is how the backup was copied."""
    if not (source.remote and destination.remote and destination.store.same_server(source.store)):
        return False
    return destination.publish_server_side(source, manifest, source.manifest_files(manifest.id))


def _transfer(source, destination, manifest: Manifest) -> None:
    """Stage the backup's exact bytes at the destination, checked against the manifest on
    the way, then publish it there (the destination's own commit)."""
    staging = destination.staging(manifest.id)
    try:
        for name, data in source.manifest_files(manifest.id).items():
            _write_new(staging / name, data)
        for entry in manifest.files:
            with _reading(source, manifest.id, entry.name) as handle, (staging / entry.name).open("xb") as out:
                digest, size = hashlib.sha256(), 0
                while chunk := handle.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if size != entry.size or digest.hexdigest() != entry.sha256:
                raise BackupCorrupt(f"backup {manifest.id}: {entry.name} read from the source does not match its "
                                    "manifest (damaged since its last verification); nothing was copied")
        destination.publish(manifest.id, staging, manifest)
    except OSError as exc:
        destination.discard(staging)
        raise RepositoryUnusable(f"cannot stage backup {manifest.id} for {destination.location}: "
                                 f"{exc.strerror or exc}; free space in the state directory") from None
    except BaseException:
        destination.discard(staging)
        raise


def _write_new(path: Path, data: bytes) -> None:
    with path.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


@contextmanager
def _reading(repository, backup_id: str, name: str) -> Iterator[BinaryIO]:
    where = f"backup {backup_id}: {name}"
    source = repository.file_of(backup_id, name)
    if isinstance(source, Path):
        try:
            descriptor = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise BackupCorrupt(f"{where} cannot be read ({exc.strerror})") from None
        with os.fdopen(descriptor, "rb") as handle:
            yield handle
        return
    with source.open(where) as (handle, _size):
        yield handle

