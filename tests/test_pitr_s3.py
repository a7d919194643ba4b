"""Point-in-time archives on object storage (issue 17): `[pitr] store` names a backup
repository, and Litestream replicates into its bucket (under `pitr/litestream`), reached
with that repository's S3 keys, the credentials from the standard AWS variables. The real
Litestream binary against the real test S3 server (moto on 127.0.0.1)."""

from __future__ import annotations

import pytest

from pitr_helpers import Replication, Writer, litestream_engine, pitr_environ, players_in, restorable_moment_after
from s3_helpers import s3_env, s3_server  # noqa: F401 - fixtures


def _settings(tmp_path, sqlite_path, server, bucket, store="primary"):
    from integrity.settings import resolve_settings

    environ = pitr_environ(tmp_path, sqlite_path, **server.environ(),
                           INTEGRITY_BACKUPS__REPOSITORY=f"s3://{bucket}/game",
                           INTEGRITY_BACKUPS__S3__ENDPOINT_URL=server.endpoint,
                           INTEGRITY_BACKUPS__S3__PATH_STYLE="true",
                           INTEGRITY_PITR__STORE=store)
    return resolve_settings(environ=environ, cwd=tmp_path)


@pytest.fixture
def no_ca_bundle(monkeypatch):
    """Litestream 0.5.17's S3 client cannot load a custom CA bundle (AWS_CA_BUNDLE, set on
    some machines, this one among them): it fails with "unable to add custom RootCAs
    HTTPClient". The test server is plain HTTP and needs none."""
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)


def test_litestream_replicates_into_the_bucket_and_restores_a_moment(tmp_path, sqlite_path, sqlite_url, s3_env,
                                                                    no_ca_bundle):
    bucket = s3_env.new_bucket()
    engine = litestream_engine(_settings(tmp_path, sqlite_path, s3_env, bucket))
    config = engine.config_files()[engine.config_path]
    assert "type: s3" in config and f'bucket: "{bucket}"' in config and 'path: "game/pitr/litestream"' in config
    assert "integrity-test-secret" not in config  # credentials stay in the environment
    with Replication(engine) as replication:
        replication.start()
        with Writer(sqlite_url) as writer:
            first = writer.mark("before_s3")
            between = restorable_moment_after(engine, first)
            writer.mark("after_s3")
    keys = [item["Key"] for item in s3_env.client().list_objects_v2(Bucket=bucket).get("Contents", ())]
    assert keys and all(key.startswith("game/pitr/litestream/") for key in keys)
    with engine.restored_at(between, tmp_path / "scratch") as copy:
        restored = players_in(copy.target)
    assert "before_s3" in restored and "after_s3" not in restored
    assert replication.deaths == []


def test_a_store_that_names_no_repository_is_a_configuration_error(tmp_path, sqlite_path, s3_env):
    from integrity.errors import ConfigInvalid

    with pytest.raises(ConfigInvalid, match=r"\[pitr\] store: no repository named 'nowhere'"):
        litestream_engine(_settings(tmp_path, sqlite_path, s3_env, "unused-bucket", store="nowhere"))
