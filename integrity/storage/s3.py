"""S3-compatible object storage: the one module that talks to it.

Why boto3 (with its s3transfer): managed multipart uploads and ranged downloads whose
memory is bounded by part size times concurrency, SHA-256 checksums sent with every part
(the server refuses a part whose bytes changed on the way), conditional writes
(`If-None-Match: *`: a manifest is created, never overwritten), S3 Object Lock, and the
standard AWS credential chain (environment, profile, instance role), so no secret ever
sits in our configuration. It is imported when a remote repository is first used, never
by `integrity --help` or a local repository.

Every failure of the service or the network becomes `RepositoryUnusable` with one line
naming the bucket and what to do; never a traceback, never a credential.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from game_core.errors import PreconditionFailed

from integrity.storage.location import S3Url

PART_SIZE = 16 << 20  # multipart part size: memory is about PART_SIZE x CONCURRENCY per transfer
CONCURRENCY = 4
STREAM_CHUNK = 1 << 20
SINGLE_COPY_LIMIT = 5 * 10**9  # S3's limit of one CopyObject request


class StorageUnusable(PreconditionFailed):
    """The object storage cannot be reached, refuses our credentials or has no such bucket."""


class ObjectExists(Exception):
    """A create-only write found the key taken (a conditional create lost its race)."""


class ObjectMissing(Exception):
    """No object under that key."""


class ObjectLocked(Exception):
    """The server refused to delete or overwrite an object under Object Lock retention."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified: datetime
    etag: str = ""  # as listed: a rewrite of the object changes it (see get_listed)


@dataclass(frozen=True)
class Retention:
    """S3 Object Lock put on an object when it is written."""

    mode: str  # "GOVERNANCE" or "COMPLIANCE"
    until: datetime


class ObjectStore:
    """One bucket and key prefix on an S3-compatible server."""

    def __init__(self, url: S3Url, *, endpoint_url: str = "", region: str = "", path_style: bool = False):
        self.url = url
        self.bucket = url.bucket
        self.prefix = url.prefix
        self._endpoint_url = endpoint_url or None
        self._region = region or None
        self._path_style = path_style
        self._client = None

    # ------------------------------------------------------------- the client

    @property
    def client(self):
        if self._client is None:
            self._client = _client(self._endpoint_url, self._region, self._path_style)
        return self._client

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def display(self, name: str = "") -> str:
        return f"s3://{self.bucket}/{self.prefix}{name}"

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Service and network failures as one line (StorageUnusable); the conditions our
        callers decide on (missing, taken, locked) as their own exceptions."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

        try:
            yield
        except Boto3Error as exc:
            # The transfer manager (upload_file, copy) wraps the service's error in its own
            # (S3UploadFailedError, RetriesExceededError): judge the error it wraps.
            cause = getattr(exc, "last_exception", None) or exc.__context__
            if isinstance(cause, (ClientError, BotoCoreError)):
                with self._errors(doing):
                    raise cause from None
            raise StorageUnusable(f"object storage refused {doing} {self.display()}: {type(exc).__name__}") from None
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchKey", "404", "NotFound") or (status == 404 and code != "NoSuchBucket"):
                raise ObjectMissing(doing) from None
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412:
                raise ObjectExists(doing) from None
            if code == "NoSuchBucket":
                raise StorageUnusable(f"the bucket {self.bucket} does not exist ({doing} {self.display()}); create it, "
                                      "or fix [backups] repository") from None
            if code in ("AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch") or status == 403:
                if "lock" in str(exc).lower() or "retention" in str(exc).lower():
                    raise ObjectLocked(doing) from None
                raise StorageUnusable(f"access denied {doing} {self.display()} ({code}); check the AWS credentials "
                                      "(AWS_ACCESS_KEY_ID / AWS_PROFILE) and the bucket policy") from None
            raise StorageUnusable(f"object storage refused {doing} {self.display()}: {code or status}") from None
        except (NoCredentialsError, PartialCredentialsError):
            raise StorageUnusable(f"no AWS credentials for {self.display()}: set AWS_ACCESS_KEY_ID and "
                                  "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE") from None
        except BotoCoreError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StorageUnusable(f"cannot reach object storage {doing} {self.display()}: {first}; check "
                                  "[backups.s3] endpoint_url (or AWS_ENDPOINT_URL) and the network") from None

    # ------------------------------------------------------------- reading

    def exists(self, name: str) -> bool:
        try:
            self.head(name)
        except ObjectMissing:
            return False
        return True

    def head(self, name: str) -> dict:
        with self._errors(f"reading {name} in"):
            return self.client.head_object(Bucket=self.bucket, Key=self.key(name))

    def get(self, name: str) -> bytes:
        """A small object's bytes (a manifest, a journal event); ObjectMissing if absent."""
        return self.get_tagged(name)[0]

    def get_tagged(self, name: str) -> tuple[bytes, str]:
        """A small object's bytes and its ETag (for a delete that must hit this very version)."""
        with self._errors(f"reading {name} in"):
            response = self.client.get_object(Bucket=self.bucket, Key=self.key(name))
            return response["Body"].read(), response.get("ETag", "")

    def get_listed(self, stored: StoredObject) -> bytes:
        """A small object a listing just returned (manifests, journal events), read once per
        process for that listing's ETag and size: a command reads the same catalogue several
        times (its own reads, then the metrics file's), each a GET per manifest and event.
        A rewritten object has another ETag (S3 and compatible servers change it with the
        bytes), so its new bytes are read; what is returned is checked by the caller exactly
        as a fresh read (manifest hash and signature, the event's digest)."""
        if not stored.etag or stored.size > SMALL_OBJECT_LIMIT:
            return self.get(stored.key)
        key = (self.client.meta.endpoint_url, self.bucket, self.key(stored.key), stored.etag, stored.size)
        found = _SMALL_OBJECTS.get(key)
        if found is not None:
            return found
        data, etag = self.get_tagged(stored.key)
        if etag == stored.etag and len(data) == stored.size:  # still the listed version
            _SMALL_OBJECTS.put(key, data)
        return data

    @contextmanager
    def reading(self, name: str) -> Iterator[tuple[BinaryIO, int]]:
        """A streamed object and its size: read it in chunks, never whole in memory."""
        with self._errors(f"reading {name} in"):
            response = self.client.get_object(Bucket=self.bucket, Key=self.key(name))
        body = response["Body"]
        try:
            yield _StreamErrors(body, self, name), int(response["ContentLength"])
        finally:
            body.close()

    def list(self, under: str = "") -> list[StoredObject]:
        """Every object whose name starts with `under` (relative to the prefix), by name."""
        found = []
        with self._errors("listing"):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key(under)):
                for item in page.get("Contents", ()):
                    found.append(StoredObject(item["Key"][len(self.prefix):], int(item["Size"]), item["LastModified"],
                                              item.get("ETag", "")))
        return sorted(found, key=lambda o: o.key)

    # ------------------------------------------------------------- writing

    def put(self, name: str, data: bytes, *, create_only: bool = False, retention: Retention | None = None) -> None:
        """One small object, its SHA-256 checked by the server. `create_only`: ObjectExists
        when the key is taken (If-None-Match: the server decides, not a racy look first)."""
        extra = {"IfNoneMatch": "*"} if create_only else {}
        with self._errors(f"writing {name} in"):
            self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data, ChecksumAlgorithm="SHA256",
                                   **extra, **_retention_arguments(retention))

    def upload(self, name: str, path: Path, *, retention: Retention | None = None) -> None:
        """A file, streamed in parts with a SHA-256 per part; visible only once complete
        (a killed upload leaves an incomplete multipart upload, aborted by `abort_uploads`)."""
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE,
                                max_concurrency=CONCURRENCY, use_threads=True)
        extra = {"ChecksumAlgorithm": "SHA256", **_retention_arguments(retention)}
        with self._errors(f"uploading {name} to"):
            self.client.upload_file(str(path), self.bucket, self.key(name), ExtraArgs=extra, Config=config)

    def same_server(self, other: "ObjectStore") -> bool:
        """Whether a server-side copy between the two can work (one endpoint, one client setup)."""
        # The endpoints the clients really use (a setting, else AWS_ENDPOINT_URL, else AWS's):
        # one repository may name it in its settings and the other take it from the variable.
        return self.client.meta.endpoint_url == other.client.meta.endpoint_url

    def copy_from(self, source: "ObjectStore", name: str, *, retention: Retention | None = None) -> str | None:
        """Copy one object from another bucket on the same server without moving its bytes
        through this host. Returns the SHA-256 (hex) the server computed over the copy's
        bytes, None when it gave none (then the caller reads the copy back to check it).
        One CopyObject request: up to 5 GB, the limit of a checksummed single copy."""
        import base64

        if self.size_of(source, name) > SINGLE_COPY_LIMIT:
            raise StorageUnusable(f"{source.display(name)} is over 5 GB: a server-side copy must be multipart, "
                                  "which has no whole-object SHA-256; copy through this host instead")
        with self._errors(f"copying {name} to"):
            response = self.client.copy_object(
                Bucket=self.bucket, Key=self.key(name), CopySource={"Bucket": source.bucket, "Key": source.key(name)},
                ChecksumAlgorithm="SHA256", **_retention_arguments(retention))
        checksum = response.get("CopyObjectResult", {}).get("ChecksumSHA256")
        return base64.b64decode(checksum).hex() if checksum and "-" not in checksum else None

    @staticmethod
    def size_of(store: "ObjectStore", name: str) -> int:
        return int(store.head(name)["ContentLength"])

    def delete(self, name: str, *, if_match: str | None = None) -> None:
        """Remove one object (its current version); ObjectLocked when retention forbids it.
        `if_match`: only if it is still that ETag's version (ObjectExists when it changed)."""
        condition = {"IfMatch": if_match} if if_match else {}
        try:
            head = self.head(name)
        except ObjectMissing:
            head = {}
        try:
            with self._errors(f"deleting {name} in"):
                self.client.delete_object(Bucket=self.bucket, Key=self.key(name), **condition,
                                          **self._version_of_locked(head))
        except StorageUnusable:
            # AccessDenied's text for a retained object varies (AWS names the lock, moto
            # says only "Access Denied"): the object's own retention decides.
            if _retained(head):
                raise ObjectLocked(f"deleting {name} in") from None
            raise

    @staticmethod
    def _version_of_locked(head: dict) -> dict:
        """With Object Lock the bucket is versioned: deleting without a version only adds a
        delete marker (the backup would look gone and still cost). Delete the version
        itself, which the server refuses while it is retained."""
        version = head.get("VersionId")
        return {"VersionId": version} if version and version != "null" else {}

    def incomplete_uploads(self) -> list[tuple[str, str]]:
        """(name, upload id) of multipart uploads started under the prefix and never completed."""
        found = []
        with self._errors("listing the incomplete uploads of"):
            paginator = self.client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for upload in page.get("Uploads", ()):
                    found.append((upload["Key"][len(self.prefix):], upload["UploadId"]))
        return found

    def abort_upload(self, name: str, upload_id: str) -> None:
        with self._errors(f"aborting the upload of {name} in"):
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key(name), UploadId=upload_id)
            except Exception as exc:  # already completed or aborted by another run: nothing left to do
                if "NoSuchUpload" not in str(exc):
                    raise

    # ------------------------------------------------------------- the bucket

    def bucket_facts(self) -> dict:
        """What `backup check` reports: Object Lock configuration and the server's clock."""
        try:
            with self._errors("reading the bucket of"):
                response = self.client.head_bucket(Bucket=self.bucket)
        except ObjectMissing:  # HEAD has no body: a missing bucket is a bare 404
            raise StorageUnusable(f"the bucket {self.bucket} does not exist ({self.display()}); create it, or fix "
                                  "the repository's location") from None
        facts = {"server_date": response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")}
        try:
            with self._errors("reading the Object Lock configuration of"):
                lock = self.client.get_object_lock_configuration(Bucket=self.bucket)
            facts["object_lock"] = lock.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
        except (StorageUnusable, ObjectMissing):
            facts["object_lock"] = False
        return facts


class _SmallObjects:
    """The bytes of small listed objects by (endpoint, bucket, key, ETag, size), least
    recently used dropped past SMALL_OBJECT_CACHE_BYTES: bounded in a long-lived process."""

    def __init__(self, limit: int):
        from collections import OrderedDict

        self._limit = limit
        self._bytes = 0
        self._entries: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()  # read by the catalogue's reader threads

    def get(self, key: tuple) -> bytes | None:
        with self._lock:
            data = self._entries.get(key)
            if data is not None:
                self._entries.move_to_end(key)
            return data

    def put(self, key: tuple, data: bytes) -> None:
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = data
            self._bytes += len(data)
            while self._bytes > self._limit:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= len(dropped)


SMALL_OBJECT_LIMIT = 256 << 10  # a manifest of a few files, an event, a journal segment
SMALL_OBJECT_CACHE_BYTES = 16 << 20
_SMALL_OBJECTS = _SmallObjects(SMALL_OBJECT_CACHE_BYTES)
_SESSIONS: dict[tuple, object] = {}
_CLIENTS: dict[tuple, object] = {}
_SESSION_LOCK = threading.Lock()


def _aws_environment() -> tuple:
    return tuple(sorted((name, value) for name, value in os.environ.items() if name.startswith("AWS_")))


def _session():
    """One boto3 session per process and AWS environment: each new session loads botocore's
    service models again (0.15-0.45 s per client measured here, and a command makes several
    stores: the catalog, the metrics). Keyed by the AWS_* variables, so a changed
    environment (another profile, other keys) gets its own. Call under _SESSION_LOCK."""
    import boto3

    key = _aws_environment()
    if key not in _SESSIONS:
        _SESSIONS[key] = boto3.session.Session()
    return _SESSIONS[key]


def _client(endpoint_url: str | None, region: str | None, path_style: bool):
    """One S3 client per process, AWS environment and endpoint settings, shared by every
    ObjectStore on them (a client is thread-safe): building one costs 20-80 ms of CPU
    even from a kept session (its service model and endpoint rules), and one command
    makes several stores on the same repository (its own, the catalog's, the metrics'
    and every lease's), each of which built its own client."""
    from botocore.config import Config

    with _SESSION_LOCK:  # a boto3 session is not thread-safe; its clients are
        key = (_aws_environment(), endpoint_url, region, path_style)
        if key not in _CLIENTS:
            config = Config(
                retries={"max_attempts": 3, "mode": "standard"},
                s3={"addressing_style": "path" if path_style else "auto"},
                # Checksums only where we ask for them: every upload sends SHA-256 itself.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                max_pool_connections=CONCURRENCY * 2 + 2,
                connect_timeout=10,
                read_timeout=60,
            )
            session = _session()
            _CLIENTS[key] = session.client("s3", endpoint_url=endpoint_url, region_name=region or session.region_name
                                           or "us-east-1", config=config)
        return _CLIENTS[key]


class _StreamErrors:
    """A response body whose network failures mid-read become StorageUnusable."""

    def __init__(self, body, store: ObjectStore, name: str):
        self._body = body
        self._store = store
        self._name = name

    def read(self, size: int = -1) -> bytes:
        with self._store._errors(f"reading {self._name} in"):
            return self._body.read(size if size and size > 0 else None)


def _retained(head: dict) -> bool:
    """An object under Object Lock retention or a legal hold, from its HEAD."""
    from datetime import timezone

    until = head.get("ObjectLockRetainUntilDate")
    return head.get("ObjectLockLegalHoldStatus") == "ON" or bool(until and until > datetime.now(timezone.utc))


def _retention_arguments(retention: Retention | None) -> dict:
    if retention is None:
        return {}
    return {"ObjectLockMode": retention.mode, "ObjectLockRetainUntilDate": retention.until}

