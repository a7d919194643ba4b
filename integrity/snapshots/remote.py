"""Snapshots on object storage: `snapshot export --to s3://bucket/key` and `migrate
dry-run --from-snapshot s3://bucket/key`, for a CI runner that reaches a bucket but never
the production database. The file is written (or read) locally under the state directory
and moved whole; the bucket is reached with [backups.s3]'s keys and the AWS variables."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from game_core.errors import InvalidInput, PreconditionFailed
from integrity.storage.location import S3_SCHEME, S3Url, s3_url_problem


class SnapshotMissing(PreconditionFailed):
    """No snapshot object under that key (exit 4, as a missing snapshot file)."""


def snapshot_url(text: str, option: str) -> S3Url:
    """`s3://bucket/path/file` checked: a bucket and an object name (InvalidInput, exit 2)."""
    problem = s3_url_problem(text)
    if problem or not text[len(S3_SCHEME):].partition("/")[2].strip("/"):
        raise InvalidInput(f"{option} {text}: give s3://BUCKET/PATH/FILE (a bucket and an object name)")
    return S3Url(text)


def _store_and_name(settings, url: S3Url):
    from integrity.storage.s3 import ObjectStore

    s3 = settings.backups.s3
    store = ObjectStore(S3Url(f"{S3_SCHEME}{url.bucket}"), endpoint_url=s3.endpoint_url, region=s3.region,
                        path_style=s3.path_style)
    return store, url.prefix.rstrip("/")


def local_staging(settings, url: S3Url) -> Path:
    """Where the snapshot is written before its upload (removed by the caller)."""
    directory = settings.state.dir / "uploads"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"snapshot-{secrets.token_hex(4)}-{url.prefix.rstrip('/').rpartition('/')[2]}"


def refuse_existing(settings, url: S3Url, *, overwrite: bool) -> None:
    store, name = _store_and_name(settings, url)
    if not overwrite and store.exists(name):
        raise InvalidInput(f"--to {url} exists; choose another name, or add --overwrite to replace it")


def upload(settings, path: Path, url: S3Url) -> None:
    store, name = _store_and_name(settings, url)
    store.upload(name, path)


@contextmanager
def downloaded(settings, url: S3Url) -> Iterator[Path]:
    """The snapshot object as a local file for the dry run, removed afterwards."""
    from integrity.storage.s3 import ObjectMissing

    store, name = _store_and_name(settings, url)
    path = local_staging(settings, url)
    try:
        try:
            with store.reading(name) as (stream, _size), path.open("xb") as out:
                while chunk := stream.read(1 << 20):
                    out.write(chunk)
        except ObjectMissing:
            raise SnapshotMissing(f"--from-snapshot {url} does not exist; write one with "
                                  "`integrity snapshot export --to s3://...`") from None
        yield path
    finally:
        path.unlink(missing_ok=True)
