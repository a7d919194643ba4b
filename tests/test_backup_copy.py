"""Copies of the backups (issue 17): `[[repositories]]`, `backup copy`, `backup create
--copy` (the scheduled backup job), `backup --repository NAME ...`, `drill --from` and the
rotating scheduled drill, and the per-repository freshness in status and metrics: a
directory primary copied to a directory and to a bucket on a real S3 server.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import pytest

from backup_helpers import BackupEnv, fill_database, one_error
from s3_helpers import S3BackupEnv, s3_env, s3_server  # noqa: F401 - fixtures


class CopyEnv(BackupEnv):
    """A BackupEnv whose integrity.toml names two copies: `usb` (a directory) and
    `offsite` (a bucket on the test server)."""

    def write_config(self, bucket: str, *, endpoint: str) -> None:
        config = self.data_home / "typing-game" / "integrity.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(
            "[[repositories]]\n"
            'name = "usb"\n'
            f'location = "{self.tmp_path / "usb"}"\n\n'
            "[[repositories]]\n"
            'name = "offsite"\n'
            f'location = "s3://{bucket}/copy"\n'
            "[repositories.s3]\n"
            f'endpoint_url = "{endpoint}"\n',
            encoding="utf-8",
        )


@pytest.fixture
def env(tmp_path, sqlite_url, s3_env) -> CopyEnv:
    fill_database(sqlite_url, players=4, results_per_player=10)
    env = CopyEnv(tmp_path, sqlite_url, extra_env=s3_env.environ())
    env.bucket = s3_env.new_bucket()
    env.write_config(env.bucket, endpoint=s3_env.endpoint)
    assert env.invoke("--no-input", "init").returncode == 0  # creates the copies too
    return env


def _bytes_of(repository, backup_id: str) -> dict[str, str]:
    """Every stored file of a backup and the SHA-256 of its bytes."""
    files = repository.manifest_files(backup_id)
    manifest = repository.read_manifest(backup_id)
    hashes = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    for entry in manifest.files:
        hashes[entry.name] = entry.sha256
    return hashes


def _repository(env, name):
    from integrity.backups.repositories import open_repository

    return open_repository(env.settings(), name)


def test_copy_is_byte_for_byte_and_verified_at_each_destination(env):
    first, second = env.create(), env.create()
    for destination in ("usb", "offsite"):
        code, document = env.invoke_json("backup", "copy", "--all-missing", "--to", destination)
        assert code == 0, document
        assert [c["backup_id"] for c in document["result"]["copied"]] == [first, second]
        copy = _repository(env, destination)
        assert copy.backup_ids() == [first, second]
        for backup_id in (first, second):
            assert copy.manifest_files(backup_id) == _repository(env, "primary").manifest_files(backup_id)
            assert [e.event for e in copy.journal() if e.backup_id == backup_id] == ["intact"]
    # A second run has nothing to do.
    code, document = env.invoke_json("backup", "copy", "--all-missing", "--to", "offsite")
    assert code == 0 and document["result"]["copied"] == [] and document["result"]["present"] == []


def test_a_copy_restores_and_drills_like_the_primary(env):
    backup_id = env.create()
    assert env.invoke("backup", "copy", "latest", "--to", "offsite").returncode == 0
    code, document = env.invoke_json("drill", "--from", "offsite")
    assert code == 0, document
    assert document["result"]["backup_id"] == backup_id
    assert document["result"]["repository"] == f"s3://{env.bucket}/copy"
    code, document = env.invoke_json("backup", "--repository", "offsite", "verify", "--deep")
    assert code == 0, document


def test_a_damaged_source_backup_is_not_copied(env):
    backup_id = env.create()
    data = env.repo / backup_id / "data.db.zst"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))  # damaged after its verification: the copy's hashing must see it
    code, document = env.invoke_json("backup", "copy", backup_id, "--to", "usb")
    assert code == 5, document
    assert "does not match its manifest" in document["result"]["failed"][0]["problem"]
    assert _repository(env, "usb").backup_ids() == []
    assert not any((env.tmp_path / "usb").glob(".tmp-*"))  # nothing half-written left behind
    env.invoke("backup", "verify", backup_id)  # now known corrupt: refused before any byte is read
    code, document = env.invoke_json("backup", "copy", backup_id, "--to", "usb")
    assert code == 5 and "not verified intact" in document["error"]


def test_create_with_copy_copies_to_every_copy_and_reports_a_failing_one(env, s3_env):
    code, document = env.invoke_json("backup", "create", "--copy")
    assert code == 0, document
    backup_id = document["result"]["manifest"]["id"]
    assert {c["repository"]: c["state"] for c in document["result"]["copies"]} == {"usb": "copied", "offsite": "copied"}
    assert backup_id in _repository(env, "offsite").backup_ids()
    # The bucket disappears: the backup is kept, the failed copy is the exit code.
    client = s3_env.client()
    for item in client.list_objects_v2(Bucket=env.bucket).get("Contents", ()):
        client.delete_object(Bucket=env.bucket, Key=item["Key"])
    client.delete_bucket(Bucket=env.bucket)
    code, document = env.invoke_json("backup", "create", "--copy")
    assert code == 4, document
    copies = {c["repository"]: c for c in document["result"]["copies"]}
    assert copies["usb"]["state"] == "copied" and copies["offsite"]["state"] == "failed"
    assert "bucket" in copies["offsite"]["problem"] and "does not exist" in copies["offsite"]["problem"]
    assert len(env.listed_ids()) == 2


def test_status_and_metrics_show_each_repository_freshness(env):
    env.create()
    code, document = env.invoke_json("status")
    rows = {row["name"]: row for row in document["result"]["checks"]}
    assert rows["copy usb"]["state"] == "problem" and "none restorable" in rows["copy usb"]["detail"]
    assert rows["copy offsite"]["state"] == "problem"
    assert env.invoke("backup", "copy", "--all-missing", "--to", "offsite").returncode == 0
    assert env.invoke("backup", "copy", "--all-missing", "--to", "usb").returncode == 0
    code, document = env.invoke_json("status")
    rows = {row["name"]: row for row in document["result"]["checks"]}
    assert rows["copy usb"]["state"] == "ok" and rows["copy offsite"]["state"] == "ok", rows
    metrics = env.invoke("metrics").output
    assert 'integrity_repository_newest_good_timestamp_seconds{repository="offsite",kind="s3"}' in metrics
    assert 'integrity_repository_newest_good_timestamp_seconds{repository="primary",kind="directory"}' in metrics
    offhost = next(line for line in metrics.splitlines() if line.startswith("integrity_offhost_newest_good_timestamp_seconds "))
    assert float(offhost.split()[1]) > 0
    from test_metrics_export import COPY_ALERTS, alert_rules, metrics_in

    for rule in alert_rules():  # what the copies' alerts read is in the file
        if rule["alert"] in COPY_ALERTS:
            assert all(f"\n{name}" in metrics for name in metrics_in(rule["expr"])), rule["alert"]


def test_an_unreachable_copy_is_a_precondition_row_not_a_crash(env):
    env.create()
    # The copy's own endpoint_url (in the file): a closed port.
    config = env.data_home / "typing-game" / "integrity.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace(text.split('endpoint_url = "')[1].split('"')[0], "http://127.0.0.1:9"), encoding="utf-8")
    code, document = env.invoke_json("status")
    rows = {row["name"]: row for row in document["result"]["checks"]}
    assert rows["copy offsite"]["state"] == "precondition", rows
    assert "cannot reach object storage" in rows["copy offsite"]["detail"]


def test_the_scheduled_drill_rotates_over_the_repositories(env):
    from integrity.backups.repositories import repository_in_turn

    settings = env.settings()
    day = 86400
    turns = [repository_in_turn(settings, datetime.fromtimestamp(day * n + 5, timezone.utc)) for n in range(6)]
    assert sorted(set(turns)) == ["offsite", "primary", "usb"]
    assert turns[0:3] != turns[0:1] * 3  # consecutive slots change repository


def test_bad_repository_names_and_config_are_refused(env, tmp_path):
    # In-process (the same exit codes and one Error: line, no traceback): what is under
    # test is the validation of names and files, not the process (a subprocess per case
    # was 3 of this file's CPU seconds).
    completed = env.invoke("backup", "copy", "--all-missing", "--to", "nowhere")
    assert completed.returncode == 2
    assert "no repository named 'nowhere'" in one_error(completed) and "usb" in one_error(completed)
    completed = env.invoke("backup", "copy", "--all-missing", "latest", "--to", "usb")
    assert completed.returncode == 2
    completed = env.invoke("backup", "--repository", "usb", "copy", "--all-missing", "--to", "usb")
    assert completed.returncode == 2 and "the repository the backups come from" in one_error(completed)
    config = env.data_home / "typing-game" / "integrity.toml"
    config.write_text('[[repositories]]\nname = "primary"\nlocation = "x"\n', encoding="utf-8")
    completed = env.invoke("backup", "list")
    assert completed.returncode == 4 and "other than 'primary'" in one_error(completed)
    config.write_text('[[repositories]]\nname = "a"\nlocation = "x"\n[[repositories]]\nname = "a"\nlocation = "y"\n',
                      encoding="utf-8")
    completed = env.invoke("backup", "list")
    assert completed.returncode == 4 and "used twice" in one_error(completed)
    config.write_text('[[repositories]]\nname = "a"\n', encoding="utf-8")
    completed = env.invoke("backup", "list")
    assert completed.returncode == 4 and "has no location" in one_error(completed)


def test_seeding_a_new_primary_from_a_copy(env, tmp_path):
    backup_id = env.create()
    assert env.invoke("backup", "copy", "latest", "--to", "offsite").returncode == 0
    fresh = tmp_path / "new-primary"
    env.extra_env["INTEGRITY_BACKUPS__REPOSITORY"] = str(fresh)
    assert env.invoke("--no-input", "init").returncode == 0
    code, document = env.invoke_json("backup", "--repository", "offsite", "copy", "--all-missing", "--to", "primary")
    assert code == 0, document
    assert [p.name for p in fresh.iterdir() if p.name.startswith("2")] == [backup_id]


def test_s3_primary_copies_to_a_directory(tmp_path, sqlite_url, s3_env):
    """The other direction: a bucket primary, a directory copy."""
    fill_database(sqlite_url, players=2, results_per_player=5)
    env = S3BackupEnv(tmp_path, sqlite_url, server=s3_env)
    config = env.data_home / "typing-game" / "integrity.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[[repositories]]\nname = "local"\nlocation = "{tmp_path / "local"}"\n', encoding="utf-8")
    assert env.invoke("--no-input", "init").returncode == 0
    code, document = env.invoke_json("backup", "create", "--copy")
    assert code == 0, document
    assert document["result"]["copies"][0]["state"] == "copied"


def test_between_two_buckets_the_server_copies_and_its_checksum_is_checked(tmp_path, sqlite_url, s3_env):
    fill_database(sqlite_url, players=2, results_per_player=5)
    env = S3BackupEnv(tmp_path, sqlite_url, server=s3_env)
    other = s3_env.new_bucket()
    config = env.data_home / "typing-game" / "integrity.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[[repositories]]\nname = "far"\nlocation = "s3://{other}/copy"\n', encoding="utf-8")
    assert env.invoke("--no-input", "init").returncode == 0
    good, damaged = env.create(), env.create()
    code, document = env.invoke_json("backup", "copy", good, "--to", "far")
    assert code == 0, document
    assert _repository(env, "far").manifest_files(good) == _repository(env, "primary").manifest_files(good)
    data_name = next(name for name in env.objects(f"{damaged}/") if "/data." in name)
    raw = bytearray(env.objects(data_name)[data_name])
    raw[len(raw) // 2] ^= 0xFF
    env.put_object(data_name, bytes(raw))  # damaged in the source bucket after its verification
    code, document = env.invoke_json("backup", "copy", damaged, "--to", "far")
    assert code == 5, document
    assert "does not match its SHA-256" in document["result"]["failed"][0]["problem"]
    assert _repository(env, "far").backup_ids() == [good]
    assert not [name for name in s3_env.client().list_objects_v2(Bucket=other).get("Contents", ())
                if damaged in name["Key"]]
