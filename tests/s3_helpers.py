"""A real S3-compatible server for the tests: moto in server mode on 127.0.0.1, started
once per test process on a free port, reached over HTTP like any endpoint (never a
patched client). Each test gets its own bucket; `S3BackupEnv` is `BackupEnv` with its
repository in that bucket, so a backup test runs unchanged on either kind.

The server runs in the pytest process (a thread per request), so what it spends per
request is the tests' CPU: see `_OneServiceDispatcher` for the part of it cut here.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import socket
import threading
from dataclasses import dataclass

import pytest

from backup_helpers import BackupEnv

ACCESS_KEY = "integrity-test-key"
SECRET_KEY = "integrity-test-secret-Zq9"  # tests assert it never appears in any output


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def environ(self) -> dict[str, str]:
        """The standard AWS variables a client (ours, boto3, rclone) needs to reach it."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def client(self):
        """The tests' own boto3 client for this server, built once per process (building
        one is ~80 ms of CPU: a session and the S3 service model; boto3 clients are
        thread-safe, and every test names its own bucket)."""
        return _client_for(self.endpoint)

    def new_bucket(self, *, object_lock: bool = False) -> str:
        name = f"test-{secrets.token_hex(6)}"
        self.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)
        return name


@functools.cache
def _client_for(endpoint: str):
    import boto3

    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1",
                                          aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)


def _one_service_dispatcher():
    """moto's WSGI dispatcher, finding each request's backend once per host name.

    moto's `get_backend_for_host` runs on every request (twice: no Host match, then the
    host it infers from the signature): it lists moto's package directory, stats each of
    its ~180 entries and tries up to ~180 URL patterns, about 1.2 ms of the ~4.5 ms of
    CPU a request costs client and server together (measured on HeadObject). Its answer
    depends only on the host name and moto's installed modules, so it is remembered per
    host; everything a request does after that (routing, the S3 backend, the
    response) is moto's own code, unchanged."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    class OneServiceDispatcher(DomainDispatcherApplication):
        @functools.cache  # noqa: B019 - one dispatcher per test process, alive as long as the server
        def get_backend_for_host(self, host):
            return super().get_backend_for_host(host)

    return OneServiceDispatcher


@pytest.fixture(scope="session")
def s3_server():
    """moto's ThreadedMotoServer (the same make_server call, app and request handler),
    with the dispatcher above."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = free_port()
    app = _one_service_dispatcher()(create_backend_app)
    server = make_server("127.0.0.1", port, app, True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, name="moto-server", daemon=True)
    thread.start()
    yield S3Server(f"http://127.0.0.1:{port}")
    server.shutdown()
    thread.join()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The AWS variables set for this test (in-process clients read the environment)."""
    for name, value in s3_server.environ().items():
        monkeypatch.setenv(name, value)
    return s3_server


@dataclass
class S3BackupEnv(BackupEnv):
    """A BackupEnv whose repository is `s3://<bucket>/repo` on the test server."""

    server: S3Server | None = None
    bucket: str = ""

    def __post_init__(self):
        if not self.bucket:
            self.bucket = self.server.new_bucket()
        from integrity.backups.repository import Repository

        Repository.of(self.settings()).ensure()  # what `integrity init` does

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/repo"

    def environ(self, **extra: str) -> dict[str, str]:
        return {**super().environ(), "INTEGRITY_BACKUPS__REPOSITORY": self.location, **self.server.environ(), **extra}

    def repository(self):
        from integrity.backups.repository import Repository

        return Repository.of(self.settings())

    def objects(self, under: str = "") -> dict[str, bytes]:
        """Every object of the repository (relative names) and its bytes."""
        client = self.server.client()
        found = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"repo/{under}"):
            for item in page.get("Contents", ()):
                found[item["Key"][len("repo/"):]] = client.get_object(Bucket=self.bucket, Key=item["Key"])["Body"].read()
        return found

    def put_object(self, name: str, data: bytes) -> None:
        self.server.client().put_object(Bucket=self.bucket, Key=f"repo/{name}", Body=data)

    def delete_object(self, name: str) -> None:
        self.server.client().delete_object(Bucket=self.bucket, Key=f"repo/{name}")
