"""Faults on a backup repository on object storage (issue 17, "Same guarantees on object
storage"), against a real S3-compatible server (moto in server mode on 127.0.0.1, reached
over HTTP by the CLI's own boto3 client; never a patched client).

The world: two signed backups of one store in a bucket, `good` (older) and `victim`
(newest), built once per module and copied object by object into a fresh bucket for each
test. Each fault is done with a plain boto3 client, as a failing disk, a bug or an
intruder would: a flipped byte in every object kind, a truncated or missing data object,
a stray object under a backup's prefix, a half-written backup put by hand, a manifest
that already exists, kills mid-upload (named crash points and a real SIGKILL while a
multipart upload runs), Object Lock, wrong credentials, a closed port, a missing bucket.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from backup_helpers import BackupEnv, fill_database, one_error, wait_for
from integrity.backups.repository import MANIFEST, MANIFEST_HASH, MANIFEST_SIGNATURE
from s3_helpers import SECRET_KEY, S3BackupEnv, S3Server, free_port
from s3_helpers import s3_env, s3_server  # noqa: F401  (fixtures)

DATA = "data.db.zst"


# ---------------------------------------------------------------- the world


@pytest.fixture(scope="module")
def server(s3_server) -> S3Server:
    return s3_server


@pytest.fixture
def s3(server, s3_env) -> S3Server:
    """The server, with the AWS variables set for this test (s3_env)."""
    return server


@dataclass
class World:
    env: S3BackupEnv
    ids: dict[str, str]  # "good", "victim" -> backup id

    def object(self, role: str, name: str) -> str:
        return f"{self.ids[role]}/{name}"

    def read(self, name: str) -> bytes:
        return self.env.objects(name)[name]


def _signing_env(env: S3BackupEnv, keys: Path) -> dict[str, str]:
    code, document = env.invoke_json("backup", "keygen", "--out", str(keys / "signing.key"))
    assert code == 0, document
    return {"INTEGRITY_BACKUPS__SIGNING_PUBLIC_KEY": document["result"]["public_key"],
            "INTEGRITY_BACKUPS__SIGNING_KEY_FILE": document["result"]["key_file"]}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, sqlite_template, server):
    """Built once: a small game database and a bucket with two signed backups."""
    root = tmp_path_factory.mktemp("s3-pristine")
    shutil.copyfile(sqlite_template, root / "game.db")
    url = f"sqlite:///{root / 'game.db'}"
    fill_database(url, players=3, results_per_player=8, seed=17)
    keys = root / "keys"
    keys.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in server.environ().items():
            patch.setenv(name, value)
        env = S3BackupEnv(root, url, server=server)
        env.extra_env.update(_signing_env(env, keys))
        good = env.create()
        fill_database(url, players=2, results_per_player=5, seed=18, prefix="q")
        victim = env.create()
    return {"root": root, "bucket": env.bucket, "ids": {"good": good, "victim": victim}, "signing": dict(env.extra_env)}


def copy_bucket(server, source: str) -> str:
    client = server.client()
    target = server.new_bucket()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=source):
        for item in page.get("Contents", ()):
            client.copy_object(Bucket=target, Key=item["Key"], CopySource={"Bucket": source, "Key": item["Key"]})
    return target


@pytest.fixture
def world(tmp_path, pristine, s3) -> World:
    # The module's one database, read by every test (none writes it): a copy elsewhere
    # would make each new backup suspect (taken from another source than the previous).
    env = S3BackupEnv(tmp_path, f"sqlite:///{pristine['root'] / 'game.db'}", extra_env=dict(pristine["signing"]),
                      server=s3, bucket=copy_bucket(s3, pristine["bucket"]))
    return World(env, dict(pristine["ids"]))


def listing(env: S3BackupEnv) -> dict:
    code, document = env.invoke_json("backup", "list")
    assert code == 0, document
    return document["result"]


def flip(world: World, name: str, seed: int) -> None:
    """XOR one byte of the object with a non-zero mask (never a no-op)."""
    rng = random.Random(seed)
    data = bytearray(world.read(name))
    data[rng.randrange(len(data))] ^= rng.randint(1, 255)
    world.env.put_object(name, bytes(data))


# ---------------------------------------------------------------- damage, one function each
# Each damages the victim and returns (what the victim's problem must name, found by
# listing: whether `backup list` sees it without reading the data).


def _flip(name: str):
    def damage(w: World) -> tuple[str, bool]:
        flip(w, w.object("victim", name), seed=len(name))
        return name, name != DATA
    return damage


def _truncated(w: World) -> tuple[str, bool]:
    name = w.object("victim", DATA)
    data = w.read(name)
    w.env.put_object(name, data[: len(data) // 2])
    return DATA, True  # its size no longer matches the listing's


def _missing_data(w: World) -> tuple[str, bool]:
    w.env.delete_object(w.object("victim", DATA))
    return DATA, True


def _stray_object(w: World) -> tuple[str, bool]:
    w.env.put_object(w.object("victim", "notes.txt"), b"not part of the backup\n")
    return "notes.txt", True


DAMAGE = {
    "data-flipped": _flip(DATA),
    "manifest-flipped": _flip(MANIFEST),
    "manifest-hash-flipped": _flip(MANIFEST_HASH),
    "manifest-signature-flipped": _flip(MANIFEST_SIGNATURE),
    "data-truncated": _truncated,
    "data-missing": _missing_data,
    "stray-object": _stray_object,
}
DEEP = ("data-flipped", "manifest-flipped")  # deep verify fails at the same first check as quick: two suffice


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_object_is_named_by_every_reader_and_the_other_backup_still_works(world, kind):
    env, good, victim = world.env, world.ids["good"], world.ids["victim"]
    named, listed_as_corrupt = DAMAGE[kind](world)

    before = listing(env)["backups"]
    states = {b["id"]: b["states"] for b in before}
    assert set(states) == {good, victim}, "a damaged backup is listed, never hidden"
    if listed_as_corrupt:
        assert "CORRUPT" in states[victim], before
    assert "CORRUPT" not in states[good], before

    code, document = env.invoke_json("backup", "verify", "--all")
    assert code == 5, document
    verdicts = {r["backup_id"]: r for r in document["result"]["results"]}
    assert verdicts[good]["quick"] == "ok", verdicts
    assert verdicts[victim]["quick"] == "failed", verdicts
    problem = verdicts[victim]["problems"][0]
    assert victim in problem and named in problem, problem

    if kind in DEEP:
        deep = env.invoke_json("backup", "verify", "--deep", victim)
        assert deep[0] == 5 and deep[1]["result"]["results"][0]["deep"] is None, deep

    refused = env.invoke("restore", victim, "--dry-run")
    assert refused.returncode == 5, refused.output
    assert victim in one_error(refused)
    assert env.latest() == good  # the automatic choice skips it

    after = {b["id"]: b["states"] for b in listing(env)["backups"]}
    assert "CORRUPT" in after[victim], after  # verify journalled what it found
    assert "intact" in after[good] and "CORRUPT" not in after[good], after


def test_a_flipped_byte_in_a_journal_event_is_reported_skipped_and_retention_refuses(world):
    """An event has no manifest: its object's name carries the start of its SHA-256, so
    any flipped byte shows, even one that leaves valid JSON."""
    env, good, victim = world.env, world.ids["good"], world.ids["victim"]
    events = env.objects("journal/")
    name = next(n for n, data in events.items() if json.loads(data)["backup_id"] == victim)
    flip(world, name, seed=5)

    result = listing(env)
    assert {b["id"] for b in result["backups"]} == {good, victim}
    assert len(result["journal_problems"]) == 1 and name in result["journal_problems"][0], result
    assert env.invoke("backup", "verify", good).returncode == 0  # the backups themselves are fine
    refused = env.invoke("backup", "prune")
    assert refused.returncode == 4, refused.output
    assert name in one_error(refused)
    after = env.objects("journal/")  # nothing deleted or rewritten (verify added its own event)
    assert all(after[n] == data for n, data in events.items() if n != name) and name in after


# ---------------------------------------------------------------- half-written and taken


def _half_written(world: World) -> str:
    """A newer id with the victim's data and manifest hash put by hand, and no manifest:
    what a listing shows while an upload runs, or after one was killed."""
    from datetime import datetime, timezone

    from integrity.backups.repository import new_backup_id

    half = new_backup_id(datetime.now(timezone.utc))
    for name in (DATA, MANIFEST_HASH, MANIFEST_SIGNATURE):
        world.env.put_object(f"{half}/{name}", world.read(world.object("victim", name)))
    return half


def test_a_half_written_backup_is_not_listed_not_restorable_and_latest_skips_it(world):
    env, good, victim = world.env, world.ids["good"], world.ids["victim"]
    half = _half_written(world)

    result = listing(env)
    assert {b["id"] for b in result["backups"]} == {good, victim}
    assert half in result["leftovers"]
    assert env.latest() == victim
    for args in (("restore", half, "--dry-run"), ("backup", "verify", half), ("backup", "show", half)):
        refused = env.invoke(*args)
        assert refused.returncode == 4, (args, refused.output)
        assert f"no backup {half}" in one_error(refused) and "unfinished upload" in one_error(refused)

    code, pruned = env.invoke_json("backup", "prune")
    assert code == 0 and half in pruned["result"]["removed_leftovers"], pruned
    assert not any(name.startswith(half) for name in env.objects())
    assert listing(env)["leftovers"] == []


def test_publishing_a_backup_whose_id_exists_fails_and_leaves_the_existing_one_unchanged(world, tmp_path):
    """Two hosts drawing the same id: the second publish is refused before it uploads
    anything over the first's objects, and the manifest is never overwritten."""
    from dataclasses import replace

    env, good, victim = world.env, world.ids["good"], world.ids["victim"]
    repository = env.repository()
    before = env.objects(f"{victim}/")
    staging = tmp_path / "other-host"
    staging.mkdir()
    for name, data in env.objects(f"{good}/").items():  # a complete, different backup under the same id
        (staging / name.partition("/")[2]).write_bytes(data)
    manifest = replace(repository.read_manifest(good), id=victim)
    assert before[f"{victim}/{DATA}"] != (staging / DATA).read_bytes()

    with pytest.raises(Exception) as refused:
        repository.publish(victim, staging, manifest)
    assert int(refused.value.exit_code) == 4
    assert str(refused.value) == (f"backup {victim} already exists in s3://{env.bucket}/repo (another host wrote the same "
                                  "id); nothing was overwritten: run again for a new id")
    assert env.objects(f"{victim}/") == before  # bytes compared, every object
    assert env.invoke("backup", "verify", victim).returncode == 0


# ---------------------------------------------------------------- kills mid-create


def _staging_ids(env: S3BackupEnv) -> list[str]:
    root = env.settings().state.dir / "uploads"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def _assert_cleaned_by_prune(env: S3BackupEnv, leftover: str, backup_id: str) -> None:
    code, pruned = env.invoke_json("backup", "prune")  # takes over the killed run's writer lease
    assert code == 0 and leftover in pruned["result"]["removed_leftovers"], pruned
    assert not any(name.startswith(backup_id) for name in env.objects())
    assert env.server.client().list_multipart_uploads(Bucket=env.bucket).get("Uploads", []) == []
    assert _staging_ids(env) == [] and listing(env)["leftovers"] == []
    assert [n for n in env.objects("locks/")] == []


@pytest.mark.parametrize("phase", ["create:verified", "create:uploaded"])  # local staging only; then objects
def test_a_create_killed_before_its_manifest_leaves_nothing_visible_and_prune_cleans_it(world, phase):
    env, pristine_ids = world.env, set(world.ids.values())
    killed = env.run("backup", "create", INTEGRITY_CRASH_AT=phase)
    assert killed.returncode == -signal.SIGKILL and f"crash point {phase}" in killed.stderr, killed.stderr
    assert "locks/writer.json" in env.objects("locks/")  # a SIGKILLed holder never releases its lease

    staged = _staging_ids(env)
    assert len(staged) == 1, staged
    backup_id = staged[0].removeprefix(".tmp-")
    uploaded = sorted(n for n in env.objects(f"{backup_id}/"))
    if phase == "create:uploaded":
        assert uploaded == sorted(f"{backup_id}/{n}" for n in (DATA, MANIFEST_HASH, MANIFEST_SIGNATURE)), uploaded
    else:  # the data upload runs while create checks the files: killed before, during or after it
        assert uploaded in ([], [f"{backup_id}/{DATA}"]), uploaded
    result = listing(env)
    assert {b["id"] for b in result["backups"]} == pristine_ids
    assert staged[0] in result["leftovers"]
    if uploaded:  # (a put still in flight when the kill came may land later: prune removes it too)
        assert backup_id in result["leftovers"], result
    refused = env.invoke("restore", backup_id, "--dry-run")
    assert refused.returncode == 4 and f"no backup {backup_id}" in one_error(refused), refused.output
    assert env.latest() == world.ids["victim"]

    _assert_cleaned_by_prune(env, staged[0], backup_id)


def test_a_create_killed_after_its_manifest_is_a_whole_backup(world):
    env = world.env
    killed = env.run("backup", "create", INTEGRITY_CRASH_AT="create:renamed")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    new = set(b["id"] for b in listing(env)["backups"]) - set(world.ids.values())
    assert len(new) == 1, new
    backup_id = new.pop()
    verified = env.invoke("backup", "verify", backup_id)
    assert verified.returncode == 0, verified.output
    assert env.latest() == backup_id


# ---------------------------------------------------------------- a real kill mid multipart upload


BALLAST_BYTES = 40 << 20  # incompressible: more than two of PART_SIZE's 16 MiB parts


@pytest.fixture(scope="module")
def large_database(tmp_path_factory, sqlite_template) -> Path:
    """A game database with ~40 MB of random blobs in a table of its own (the backup
    copies the whole file), so its compressed copy is a multipart upload."""
    import sqlite3

    path = tmp_path_factory.mktemp("s3-large") / "game.db"
    shutil.copyfile(sqlite_template, path)
    fill_database(f"sqlite:///{path}", players=2, results_per_player=5, seed=19)
    rng = random.Random(19)
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE ballast (id INTEGER PRIMARY KEY, blob BLOB NOT NULL)")
        connection.executemany("INSERT INTO ballast (blob) VALUES (?)",
                               ((rng.randbytes(1 << 20),) for _ in range(BALLAST_BYTES >> 20)))
    return path


def test_a_sigkill_during_a_multipart_upload_leaves_nothing_visible_and_prune_aborts_it(tmp_path, s3, large_database):
    shutil.copyfile(large_database, tmp_path / "game.db")
    env = S3BackupEnv(tmp_path, f"sqlite:///{tmp_path / 'game.db'}", server=s3)
    client = s3.client()
    seen: list[str] = []
    process = env.popen("backup", "create")
    try:
        def uploading() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"create ended ({process.returncode}) before a multipart upload was seen: "
                                     f"{process.stderr.read()}")
            seen.extend(u["Key"] for u in client.list_multipart_uploads(Bucket=env.bucket).get("Uploads", ()))
            return bool(seen)
        wait_for(uploading, timeout=15, what="an incomplete multipart upload")
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert len(seen) == 1 and seen[0].endswith(f"/{DATA}"), seen
    backup_id = seen[0].removeprefix("repo/").partition("/")[0]

    # Killed mid-upload: the multipart upload is still open (or, had the kill landed just
    # after its last part, the data object is whole); the manifest is never there.
    open_uploads = client.list_multipart_uploads(Bucket=env.bucket).get("Uploads", [])
    assert [u["Key"] for u in open_uploads] == seen or f"{backup_id}/{DATA}" in env.objects(backup_id), open_uploads
    assert f"{backup_id}/{MANIFEST}" not in env.objects(backup_id)
    result = listing(env)
    assert result["backups"] == [] and backup_id in result["leftovers"], result
    refused = env.invoke("restore", backup_id, "--dry-run")
    assert refused.returncode == 4 and f"no backup {backup_id}" in one_error(refused), refused.output

    _assert_cleaned_by_prune(env, backup_id, backup_id)
    assert [n for n in env.objects() if n != "repository.json" and not n.startswith("journal/")] == []


# ---------------------------------------------------------------- Object Lock

KEEP_ONE = {
    "INTEGRITY_BACKUPS__RETENTION__KEEP_LAST": "1",
    "INTEGRITY_BACKUPS__RETENTION__KEEP_HOURLY": "0",
    "INTEGRITY_BACKUPS__RETENTION__KEEP_DAILY": "0",
    "INTEGRITY_BACKUPS__RETENTION__KEEP_WEEKLY": "0",
    "INTEGRITY_BACKUPS__RETENTION__KEEP_MONTHLY": "0",
}


def _locked_env(tmp_path, server, pristine, mode: str, *, object_lock: bool = True) -> S3BackupEnv:
    settings = {"INTEGRITY_BACKUPS__S3__OBJECT_LOCK_MODE": mode, "INTEGRITY_BACKUPS__S3__OBJECT_LOCK_DAYS": "1"}
    return S3BackupEnv(tmp_path, f"sqlite:///{pristine['root'] / 'game.db'}", extra_env=settings, server=server,
                       bucket=server.new_bucket(object_lock=object_lock))


@pytest.mark.parametrize("mode", ["governance", "compliance"])
def test_object_lock_refuses_a_delete_and_prune_keeps_a_locked_expiring_backup(tmp_path, s3, pristine, mode):
    from botocore.exceptions import ClientError

    env = _locked_env(tmp_path, s3, pristine, mode)
    older, newer = env.create(), env.create()
    client = s3.client()
    for name in (DATA, MANIFEST, MANIFEST_HASH):
        head = client.head_object(Bucket=env.bucket, Key=f"repo/{older}/{name}")
        assert head["ObjectLockMode"] == mode.upper(), head
        with pytest.raises(ClientError) as refused:  # the version itself: without one S3 only adds a delete marker
            client.delete_object(Bucket=env.bucket, Key=f"repo/{older}/{name}", VersionId=head["VersionId"])
        assert refused.value.response["Error"]["Code"] == "AccessDenied", refused.value.response
    # The control: the same client deletes an unlocked object's version in the same bucket.
    probe = client.put_object(Bucket=env.bucket, Key="repo/locks/probe", Body=b"x")
    client.delete_object(Bucket=env.bucket, Key="repo/locks/probe", VersionId=probe["VersionId"])

    code, pruned = env.invoke_json("backup", "prune", **KEEP_ONE)
    assert code == 0, pruned
    result = pruned["result"]
    assert result["deleted"] == [] and [s["backup_id"] for s in result["skipped"]] == [older], result
    assert result["skipped"][0]["reason"].startswith("under Object Lock retention until "), result
    assert {b["id"] for b in listing(env)["backups"]} == {older, newer}
    shown = env.invoke("backup", "prune", **KEEP_ONE)  # the text says why it stays
    assert shown.returncode == 0 and "kept (Object Lock)" in shown.output, shown.output
    verified = env.invoke("backup", "verify", "--all")
    assert verified.returncode == 0, verified.output


def _check(env: S3BackupEnv, **extra) -> tuple[int, dict]:
    code, document = env.invoke_json("backup", "check", **extra)
    assert "result" in document, document.get("error")
    return code, {f["name"]: f for f in document["result"]["findings"]}


def test_backup_check_proves_object_lock_and_fails_when_the_bucket_has_none(tmp_path, s3, pristine):
    locked = _locked_env(tmp_path / "locked", s3, pristine, "governance")
    code, findings = _check(locked)
    assert code == 0 and findings["immutability"]["state"] == "ok", findings
    assert "refused the delete of a locked probe" in findings["immutability"]["detail"]

    unlocked = _locked_env(tmp_path / "unlocked", s3, pristine, "governance", object_lock=False)
    code, findings = _check(unlocked)
    assert code == 4 and findings["immutability"]["state"] == "fail", findings
    assert f"the bucket {unlocked.bucket} has no Object Lock" in findings["immutability"]["detail"]
    refused = unlocked.invoke("backup", "create")
    assert refused.returncode == 4, refused.output
    one_error(refused)
    assert listing(unlocked)["backups"] == []


# ---------------------------------------------------------------- credentials and reach


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """A second moto server, in a process of its own, that checks signatures: set up
    without authentication (a user, its key, a policy allowing S3, a bucket holding a
    repository), then authentication switched on for every later request."""
    import boto3
    import requests

    from backup_helpers import wait_for

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        server = S3Server(f"http://127.0.0.1:{port}")

        def up() -> bool:
            assert process.poll() is None, "the moto server exited"
            try:
                return requests.get(f"{server.endpoint}/moto-api/", timeout=1).ok
            except requests.ConnectionError:
                return False
        wait_for(up, timeout=30, what="the authenticating moto server")
        bucket = server.new_bucket()
        server.client().put_object(Bucket=bucket, Key="repo/repository.json",
                                   Body=json.dumps({"format": 1, "kind": "integrity backup repository"}).encode())
        iam = boto3.client("iam", endpoint_url=server.endpoint, region_name="us-east-1",
                           aws_access_key_id="setup", aws_secret_access_key="setup")
        iam.create_user(UserName="backups")
        iam.put_user_policy(UserName="backups", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="backups")["AccessKey"]
        requests.post(f"{server.endpoint}/moto-api/reset-auth", data=b"0", timeout=5).raise_for_status()
        yield {"server": server, "bucket": bucket, "key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    finally:
        process.kill()
        process.wait()


def _no_secret(completed, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in completed.stdout + completed.stderr


def test_a_wrong_secret_key_is_one_error_line_exit_4_and_never_shown(tmp_path, sqlite_url, auth_server):
    server, key, secret = auth_server["server"], auth_server["key"], auth_server["secret"]
    env = BackupEnv(tmp_path, sqlite_url)
    location = {"INTEGRITY_BACKUPS__REPOSITORY": f"s3://{auth_server['bucket']}/repo", **server.environ(),
                "AWS_ACCESS_KEY_ID": key}
    wrong = "wrong-Secret-Key-0000000000000000000000"

    accepted = env.invoke("backup", "list", **{**location, "AWS_SECRET_ACCESS_KEY": secret})  # the control
    assert accepted.returncode == 0, accepted.output
    # A real process; in-process, where boto3 already holds a session for the right key.
    for run, args in ((env.run, ("backup", "list")), (env.invoke, ("backup", "create")), (env.invoke, ("backup", "list"))):
        refused = run(*args, **{**location, "AWS_SECRET_ACCESS_KEY": wrong})
        assert refused.returncode == 4, refused.stderr
        error = one_error(refused)
        assert "access denied" in error and "check the AWS credentials" in error, error
        assert auth_server["bucket"] in error, error
        _no_secret(refused, wrong, secret, SECRET_KEY)


@pytest.mark.parametrize("case", ["closed port", "missing bucket"])
def test_an_unreachable_endpoint_and_a_missing_bucket_are_one_error_line_exit_4(tmp_path, sqlite_url, s3_server, case):
    env = BackupEnv(tmp_path, sqlite_url)
    environ = {**s3_server.environ(), "INTEGRITY_BACKUPS__REPOSITORY": "s3://no-such-bucket-here/repo"}
    if case == "closed port":
        environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
    expected = {"closed port": "cannot reach object storage", "missing bucket": "the bucket no-such-bucket-here does not exist"}
    for run, args in ((env.run, ("backup", "list")), (env.invoke, ("backup", "create"))):
        refused = run(*args, **environ)
        assert refused.returncode == 4, (args, refused.stderr)
        assert expected[case] in one_error(refused), (args, refused.stderr)
        _no_secret(refused, SECRET_KEY)
