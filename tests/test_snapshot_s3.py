"""Snapshots through object storage (issues 17 and 18): `snapshot export --sanitize --to
s3://...` on a host that reaches production, `migrate dry-run --from-snapshot s3://...`
on a CI runner that reaches only the bucket. The real test S3 server (moto on 127.0.0.1)."""

from __future__ import annotations

import json

from s3_helpers import s3_env, s3_server  # noqa: F401 - fixtures
from test_snapshot_dry_run import _seed, dry_run, invoke, verdict


def test_a_sanitised_export_to_a_bucket_gives_the_dry_run_the_same_verdict(tmp_path, sqlite_url, s3_env, monkeypatch):
    import sqlalchemy as sa

    from game_core.db import create_engine

    for name, value in s3_env.environ().items():
        monkeypatch.setenv(name, value)  # invoke's environment keeps the process's AWS variables
    _seed(sqlite_url)
    bucket = s3_env.new_bucket()
    engine = create_engine(sqlite_url)
    with engine.connect() as connection:
        names = list(connection.execute(sa.text("SELECT username FROM players")).scalars())
    engine.dispose()
    url = f"s3://{bucket}/ci/shaped.db"

    result = invoke(tmp_path / "prod", sqlite_url, "--json", "snapshot", "export", "--sanitize", "--to", url)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["result"]["path"] == url
    data = s3_env.client().get_object(Bucket=bucket, Key="ci/shaped.db")["Body"].read()
    assert data.startswith(b"SQLite format 3\x00")
    assert names and not [name for name in names if name.encode() in data]
    assert not list((tmp_path / "prod" / "xdg-data").rglob("snapshot-*"))  # the local copy is gone
    again = invoke(tmp_path / "prod", sqlite_url, "snapshot", "export", "--to", url)
    assert again.exit_code == 2 and "exists" in again.output

    case = "safe_add_nullable_column"
    ci = tmp_path / "ci"
    local = tmp_path / "shaped.db"
    local.write_bytes(data)
    from_bucket = dry_run(ci, f"sqlite:///{tmp_path / 'ci-unused.db'}", case, "--from-snapshot", url)
    from_file = dry_run(ci, f"sqlite:///{tmp_path / 'ci-unused.db'}", case, "--from-snapshot", str(local))
    assert from_bucket["exit_code"] == 0, from_bucket
    assert verdict(from_bucket) == verdict(from_file)
    missing = dry_run(ci, f"sqlite:///{tmp_path / 'ci-unused.db'}", case, "--from-snapshot", f"s3://{bucket}/ci/none.db")
    assert missing["exit_code"] == 4 and "does not exist" in missing["error"]
