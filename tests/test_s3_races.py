"""Two hosts on one bucket (issue 17): separate processes with separate state directories
(what two machines are to each other: no shared flock, no shared staging), racing creates
and a create racing a prune on the same S3 repository (moto in server mode). Every outcome
the writer lease allows is valid; what must hold whatever the order: every listed backup
verifies deep, and the bucket holds nothing but the listed backups, the journal and the
marker. The writer lease of a SIGKILLed holder is taken over; a live one is not.
"""

from __future__ import annotations

import json
import signal
from datetime import datetime, timedelta, timezone

import pytest

from backup_helpers import one_error, wait_for
from s3_helpers import S3BackupEnv
from s3_helpers import s3_env, s3_server  # noqa: F401  (fixtures)
from test_s3_faults import KEEP_ONE, copy_bucket, listing, pristine, server  # noqa: F401  (pristine, server: fixtures)


def _two_hosts(tmp_path, pristine, server, bucket: str) -> tuple[S3BackupEnv, S3BackupEnv]:
    """Two "hosts": one bucket, one database, a state directory each."""
    url = f"sqlite:///{pristine['root'] / 'game.db'}"  # read only, by every test: one source
    for name in ("host-a", "host-b"):
        (tmp_path / name).mkdir()
    return tuple(S3BackupEnv(tmp_path / name, url, extra_env=dict(pristine["signing"]), server=server, bucket=bucket)
                 for name in ("host-a", "host-b"))


@pytest.fixture
def hosts(tmp_path, pristine, s3_env) -> tuple[S3BackupEnv, S3BackupEnv]:  # noqa: F811
    """Two hosts on a new, empty repository."""
    return _two_hosts(tmp_path, pristine, s3_env, s3_env.new_bucket())


@pytest.fixture
def hosts_with_backups(tmp_path, pristine, s3_env) -> tuple[S3BackupEnv, S3BackupEnv]:  # noqa: F811
    """Two hosts on a copy of the module's repository of two signed backups."""
    return _two_hosts(tmp_path, pristine, s3_env, copy_bucket(s3_env, pristine["bucket"]))


def _settled(env: S3BackupEnv, old: set[str] = frozenset()) -> set[str]:
    """Whatever the race's order: every listed backup verifies (deep, but for `old` ones
    copied in before the race: their hashes), nothing is left over, and the bucket holds
    exactly the listed backups' objects, the journal and the marker."""
    result = listing(env)
    ids = {b["id"] for b in result["backups"]}
    assert result["leftovers"] == [] and result["journal_problems"] == [], result
    new = sorted(ids - old)
    if ids & old:
        code, document = env.invoke_json("backup", "verify", "--all")
        assert code == 0 and {r["backup_id"] for r in document["result"]["results"]} == ids, document
    if len(new) == 1:
        code, document = env.invoke_json("backup", "verify", "--deep", new[0])
        assert code == 0 and document["result"]["results"][0]["deep"] == "ok", document
    elif new:
        code, document = env.invoke_json("backup", "verify", "--all", "--deep")
        assert code == 0, document
        assert {r["backup_id"] for r in document["result"]["results"] if r["deep"] == "ok"} == ids, document
    for name in env.objects():
        head = name.partition("/")[0]
        assert head in ids or name == "repository.json" or head == "journal", name
    assert env.server.client().list_multipart_uploads(Bucket=env.bucket).get("Uploads", []) == []
    return ids


def _finish(process) -> tuple[int, str]:
    out, err = process.communicate(timeout=60)
    assert "Traceback" not in out + err, err
    return process.returncode, err


def test_two_hosts_creating_at_once_without_waiting_one_may_be_refused_naming_the_holder(hosts):
    """Started together without --lock-wait: both succeed (the first was done before the
    second asked) or one is refused at once naming the other; never two writers."""
    a, b = hosts
    before = {x["id"] for x in listing(a)["backups"]}
    processes = [env.popen("backup", "create") for env in (a, b)]
    outcomes = [_finish(p) for p in processes]
    for code, err in outcomes:
        assert code in (0, 4), outcomes
        if code == 4:  # the other host held the lease: refused at once, naming it
            error = [line for line in err.splitlines() if line.startswith("Error:")]
            assert len(error) == 1 and "locked by 'backup create'" in error[0] and "--lock-wait" in error[0], err
    assert 0 in [code for code, _ in outcomes], outcomes
    ids = _settled(a)
    assert len(ids - before) == [code for code, _ in outcomes].count(0), (ids, outcomes)


def test_a_create_racing_a_prune_on_another_host(hosts_with_backups, pristine):  # noqa: F811
    """Both wait for the lease (--lock-wait): both succeed, one after the other."""
    a, b = hosts_with_backups
    before = set(pristine["ids"].values())
    creating = a.popen("--json", "backup", "create", "--lock-wait", "60")
    pruning = b.popen("--json", "backup", "prune", "--lock-wait", "60", **KEEP_ONE)
    (created_code, _), (pruned_code, _) = _finish(creating), _finish(pruning)
    assert (created_code, pruned_code) == (0, 0)
    ids = _settled(a, old=before)
    new = ids - before
    assert len(new) == 1, ids  # the new backup is never pruned: it is the newest restorable one
    # Either order is valid: prune first (one old backup kept, then the new one) or
    # create first (only the new one kept).
    assert ids in ({max(before)} | new, new), ids


# ---------------------------------------------------------------- the writer lease


def _lease(env: S3BackupEnv) -> dict | None:
    found = env.objects("locks/")
    return json.loads(found["locks/writer.json"]) if "locks/writer.json" in found else None


def test_a_live_holders_lease_is_respected_and_a_sigkilled_holders_is_taken_over(hosts):
    a, b = hosts
    # A create that holds the writer lease, paused after it took it (the pause is only a
    # window to act in: the test kills it, never waits it out).
    holder = a.popen("backup", "create", INTEGRITY_PAUSE_AT="create:started=120")
    try:
        wait_for(lambda: holder.poll() is not None or _lease(a) is not None, timeout=30, what="the writer lease")
        assert holder.poll() is None, holder.communicate()
        lease = _lease(a)
        assert lease["pid"] == holder.pid and lease["command"] == "backup create", lease

        refused = b.invoke("backup", "prune")  # the other host, while the holder lives
        assert refused.returncode == 4, refused.output
        assert f"pid {holder.pid}" in one_error(refused) and "--lock-wait" in one_error(refused)
    finally:
        holder.kill()
        holder.communicate()
    assert holder.returncode == -signal.SIGKILL
    assert _lease(a)["pid"] == holder.pid  # a SIGKILLed holder releases nothing

    code, pruned = b.invoke_json("backup", "prune")  # same host, dead pid: taken over at once
    assert code == 0, pruned
    assert _lease(a) is None
    code, pruned = a.invoke_json("backup", "prune")  # host a's own staging of the killed run
    assert code == 0 and len(pruned["result"]["removed_leftovers"]) == 1, pruned
    _settled(a)


@pytest.mark.parametrize("lease", ["live", "expired", "truncated"])
def test_another_hosts_lease_is_taken_over_only_once_expired_or_unreadable(hosts, lease):
    a, _ = hosts
    now = datetime.now(timezone.utc)
    expires = now - timedelta(seconds=5) if lease == "expired" else now + timedelta(minutes=5)
    document = json.dumps({
        "command": "backup create", "pid": 4242, "host": "db2.elsewhere", "mode": "exclusive", "token": "t",
        "since": (now - timedelta(minutes=1)).isoformat(timespec="seconds"),
        "expires": expires.isoformat(timespec="seconds"),
    }).encode()
    # A damaged lease (its writer cut off mid-put by a broken proxy) names no expiry: taken
    # over rather than blocking the repository for ever.
    a.put_object("locks/writer.json", document[: len(document) // 2] if lease == "truncated" else document)
    result = a.invoke("backup", "prune")
    if lease == "live":
        assert result.returncode == 4, result.output
        assert "pid 4242 on db2.elsewhere" in one_error(result)
        assert _lease(a)["host"] == "db2.elsewhere"
    else:
        assert result.returncode == 0, result.output
        assert "locks/writer.json" not in a.objects("locks/")
