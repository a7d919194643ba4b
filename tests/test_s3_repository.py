"""Every backup command on a repository in S3-compatible object storage (issue 17): the
same CLI, exit codes and JSON as on a directory, against a real S3 server (moto in server
mode on 127.0.0.1, reached over HTTP) on both engines.

The fault cases (damage of every object kind, kills mid-upload, races between hosts,
Object Lock) are in tests/test_s3_faults.py.
"""

from __future__ import annotations

import pytest

from backup_helpers import fill_database, one_error, scalar
from s3_helpers import SECRET_KEY, S3BackupEnv, s3_env, s3_server  # noqa: F401 - fixtures


@pytest.fixture
def env(tmp_path, sqlite_url, s3_env) -> S3BackupEnv:
    fill_database(sqlite_url, players=5, results_per_player=20)
    return S3BackupEnv(tmp_path, sqlite_url, server=s3_env)


def _no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET_KEY not in text


def test_create_writes_objects_with_the_manifest_as_commit_and_lists_it(env):
    backup_id = env.create()
    names = sorted(env.objects(f"{backup_id}/"))
    assert names == [f"{backup_id}/data.db.zst", f"{backup_id}/manifest.json", f"{backup_id}/manifest.sha256"]
    assert env.listed_ids() == [backup_id]
    events = [name for name in env.objects("journal/")]
    assert len(events) == 1 and events[0].endswith(".json")  # the create's own quick check, one object
    assert env.journal_events(backup_id) == ["intact"]
    code, document = env.invoke_json("backup", "show", backup_id)
    assert code == 0 and document["result"]["path"] == f"s3://{env.bucket}/repo/{backup_id}/"


def test_quick_and_deep_verify_read_every_object_back(env):
    first = env.create()
    second = env.create()
    code, document = env.invoke_json("backup", "verify", "--all", "--deep")
    assert code == 0, document
    assert [r["backup_id"] for r in document["result"]["results"]] == [first, second]
    assert "deep_verified" in env.journal_events(second) and "deep_verified" in env.journal_events(first)
    assert document["result"]["repository"] == f"s3://{env.bucket}/repo"


def test_restore_latest_brings_back_the_backup_and_keeps_a_safety_copy_in_the_bucket(env):
    backup_id = env.create()
    before = scalar(env.url, "SELECT COUNT(*) FROM results")
    fill_database(env.url, players=2, results_per_player=5, prefix="late")
    completed = env.invoke("--no-input", "restore", "latest", "--yes")
    assert completed.returncode == 0, completed.output
    assert scalar(env.url, "SELECT COUNT(*) FROM results") == before
    listed = env.listed()
    assert backup_id in listed and len(listed) == 2  # the safety backup, in the same repository


def test_drill_diff_and_dry_run_read_the_backup_from_the_bucket(env):
    backup_id = env.create()
    drill = env.invoke("drill")
    assert drill.returncode == 0, drill.output
    assert env.journal_events(backup_id)[-1] == "drilled"
    code, document = env.invoke_json("diff", backup_id)
    assert code == 0, document
    env.invoke("backup", "verify", backup_id, "--deep")
    dry = env.invoke("migrate", "dry-run", "--from-backup", "latest")
    assert dry.returncode == 0, dry.output


def test_pin_and_prune_use_the_journal_objects(env):
    ids = [env.create() for _ in range(3)]
    assert env.invoke("backup", "pin", ids[0]).returncode == 0
    code, document = env.invoke_json("backup", "prune", INTEGRITY_BACKUPS__RETENTION__KEEP_LAST="1",
                                     INTEGRITY_BACKUPS__RETENTION__KEEP_HOURLY="0",
                                     INTEGRITY_BACKUPS__RETENTION__KEEP_DAILY="0",
                                     INTEGRITY_BACKUPS__RETENTION__KEEP_WEEKLY="0",
                                     INTEGRITY_BACKUPS__RETENTION__KEEP_MONTHLY="0")
    assert code == 0, document
    assert document["result"]["deleted"] == [ids[1]]
    assert env.listed_ids() == [ids[0], ids[2]]
    assert not env.objects(f"{ids[1]}/")  # every object of the pruned backup is gone
    assert env.journal_events(ids[1])[-1] == "pruned"


def test_status_and_metrics_report_the_remote_repository(env):
    env.create()
    code, document = env.invoke_json("status")
    assert code in (0, 3), document  # jobs never run here may be overdue; the backup row is what matters
    rows = {row["name"]: row for row in document["result"]["checks"]}
    assert rows["newest good backup"]["state"] == "ok", rows
    metrics = env.invoke("metrics")
    assert metrics.returncode == 0 and "integrity_backup_newest_good_timestamp_seconds" in metrics.output


def test_backup_check_proves_reach_rights_clock_and_a_trial_backup(env):
    code, document = env.invoke_json("backup", "check")
    findings = document["result"]["summary"] if "summary" in document["result"] else document["result"]
    completed = env.invoke("backup", "check")
    _no_secret(completed.output)
    for name in ("repository", "clock", "storage class", "placement", "trial backup"):
        assert f"{name}" in completed.output
    assert code == 0, findings
    assert not [name for name in env.objects() if ".tmp-check" in name]  # the trial is removed


def test_before_init_the_remote_repository_is_missing_exit_4(tmp_path, sqlite_url, s3_env):
    env = S3BackupEnv(tmp_path, sqlite_url, server=s3_env)
    env.delete_object("repository.json")  # as if `integrity init` never ran on this prefix
    completed = env.invoke("backup", "create")
    assert completed.returncode == 4
    assert "does not exist" in completed.output and "integrity init" in completed.output


def test_init_marks_the_prefix_as_a_repository(tmp_path, sqlite_url, s3_env):
    bucket = s3_env.new_bucket()
    env = S3BackupEnv(tmp_path, sqlite_url, server=s3_env, bucket=bucket)
    env.delete_object("repository.json")
    completed = env.invoke("--no-input", "init")
    assert completed.returncode == 0, completed.output
    assert "repository.json" in env.objects()
    assert f"s3://{bucket}/repo" in completed.output


def test_a_bad_s3_url_is_refused_as_configuration(tmp_path, sqlite_url):
    from backup_helpers import BackupEnv

    # In-process: the setting's validation is under test, not the process boundary.
    completed = BackupEnv(tmp_path, sqlite_url).invoke("backup", "list", INTEGRITY_BACKUPS__REPOSITORY="s3://Bad_Bucket/x")
    assert completed.returncode == 4
    assert "INTEGRITY_BACKUPS__REPOSITORY" in one_error(completed) and "bucket name" in one_error(completed)


@pytest.mark.postgres
def test_postgresql_backup_and_restore_through_the_bucket(tmp_path, pg_url, s3_env):
    fill_database(pg_url, players=4, results_per_player=10)
    env = S3BackupEnv(tmp_path, pg_url, server=s3_env)
    backup_id = env.create()
    data_names = {entry.name for entry in env.repository().read_manifest(backup_id).files}
    assert {f"{backup_id}/{name}" for name in data_names} < set(env.objects(f"{backup_id}/"))
    before = scalar(pg_url, "SELECT COUNT(*) FROM results")
    fill_database(pg_url, players=1, results_per_player=3, prefix="late")
    completed = env.invoke("--no-input", "restore", backup_id, "--yes")
    assert completed.returncode == 0, completed.output
    assert scalar(pg_url, "SELECT COUNT(*) FROM results") == before
    code, document = env.invoke_json("backup", "verify", backup_id, "--deep")
    assert code == 0, document


def test_the_journal_is_compacted_into_a_segment_and_reads_the_same(env):
    backup_id = env.create()
    repository = env.repository()
    for _ in range(12):
        repository.record_pin(backup_id, None)
        repository.record_unpin(backup_id)
    env.put_object("journal/20990101T000000.000000Z-0000abcd-0123456789abcdef.json", b'{"not": "an event"}')
    before = repository.read_journal()
    assert len(before.entries) == 25 and len(before.problems) == 1
    assert repository.compact_journal(at_least=10) == 25
    names = sorted(env.objects("journal/"))
    assert len(names) == 2 and names[-1].startswith("journal/segment-")  # the damaged event stays, reported
    after = repository.read_journal()
    assert after.entries == before.entries and after.problems == before.problems
    assert repository.compact_journal(at_least=10) == 0  # nothing new to fold
    repository.record_pin(backup_id, None)  # new events go beside the segment
    assert len(repository.read_journal().entries) == 26
    # A reader between the segment's creation and the deletes sees each event once.
    segment = names[-1]
    body = env.objects(segment)[segment]
    first_line = body.split(b"\n")[0]
    event_name = "journal/20200101T000000.000000Z-00000001-" + __import__("hashlib").sha256(first_line).hexdigest()[:16] + ".json"
    env.put_object(event_name, first_line)
    assert len(repository.read_journal().entries) == 26


def test_a_reader_and_a_deleter_of_one_backup_each_see_the_other(env):
    """Both write their lease first and look for the other's second: a reader starting
    while prune deletes is refused, and prune skips a backup being read."""
    from integrity.locks import LockHeld

    backup_id = env.create()
    repository, other_host = env.repository(), env.repository()
    with repository.deleting(backup_id, command="backup prune"):
        with pytest.raises(LockHeld, match="is being deleted"):
            with other_host.reading(backup_id, command="restore"):
                pass
    with repository.reading(backup_id, command="restore"):
        with pytest.raises(LockHeld, match="it is being read"):
            with other_host.deleting(backup_id, command="backup prune"):
                pass
    assert not env.objects("locks/")  # every lease given back


def test_a_byte_flipped_after_a_read_is_seen_by_the_next_read_in_the_same_process(env):
    """Small listed objects are read once per process per ETag (ObjectStore.get_listed): an
    object rewritten since (same size, one byte flipped) must be read again, not served
    from what the process read before."""
    backup_id = env.create()
    assert "CORRUPT" not in env.listed()[backup_id]["states"]  # manifest and events read, kept
    assert env.repository().read_journal().problems == ()
    event = next(name for name in env.objects("journal/"))
    for name in (f"{backup_id}/manifest.json", event):
        data = bytearray(env.objects(name)[name])
        data[len(data) // 2] ^= 0x01
        env.put_object(name, bytes(data))
    assert "CORRUPT" in env.listed()[backup_id]["states"]
    problems = env.repository().read_journal().problems
    assert len(problems) == 1 and event in problems[0], problems
