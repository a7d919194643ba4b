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
from dataclasses import dataclass
from pathlib import Path

import pytest

from backup_helpers import fill_database, one_error, wait_for
from integrity.backups.repository import MANIFEST, MANIFEST_HASH, MANIFEST_SIGNATURE
from s3_helpers import SECRET_KEY, S3BackupEnv, s3_env, s3_server  # noqa: F401

DATA = "data.db.zst"


# ---------------------------------------------------------------- the world


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
def pristine(tmp_path_factory, sqlite_template, s3_server):
    """Built once: a small game database and a bucket with two signed backups."""
    root = tmp_path_factory.mktemp("s3-pristine")
    shutil.copyfile(sqlite_template, root / "game.db")
    url = f"sqlite:///{root / 'game.db'}"
    fill_database(url, players=3, results_per_player=8, seed=17)
    keys = root / "keys"
    keys.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in s3_server.environ().items():
            patch.setenv(name, value)
        env = S3BackupEnv(root, url, server=s3_server)
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
def world(tmp_path, pristine, s3_env) -> World:
    # The module's one database, read by every test (none writes it): a copy elsewhere
    # would make each new backup suspect (taken from another source than the previous).
    env = S3BackupEnv(tmp_path, f"sqlite:///{pristine['root'] / 'game.db'}", extra_env=dict(pristine["signing"]),
                      server=s3_env, bucket=copy_bucket(s3_env, pristine["bucket"]))
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

    deep = env.invoke_json("backup", "verify", "--deep", victim)
    assert deep[0] == 5 and deep[1]["result"]["results"][0]["deep"] is None, deep

    refused = env.invoke("restore", victim, "--dry-run")
    assert refused.returncode == 5, refused.output
    assert victim in one_error(refused)
    assert env.latest() == good  # the automatic choice skips it

    after = {b["id"]: b["states"] for b in listing(env)["backups"]}
    assert any(s in after[victim] for s in ("CORRUPT", "FAILED", "failed")), after
    assert not any(s in after[good] for s in ("CORRUPT", "FAILED", "failed")), after
    assert env.invoke("backup", "verify", good).returncode == 0


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


@pytest.mark.parametrize("phase", ["create:compressed", "create:verified", "create:uploaded"])
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
    else:
        assert uploaded == []
    result = listing(env)
    assert {b["id"] for b in result["backups"]} == pristine_ids
    assert staged[0] in result["leftovers"]
    assert (backup_id in result["leftovers"]) == (phase == "create:uploaded")
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


def test_a_sigkill_during_a_multipart_upload_leaves_nothing_visible_and_prune_aborts_it(tmp_path, s3_env, large_database):
    shutil.copyfile(large_database, tmp_path / "game.db")
    env = S3BackupEnv(tmp_path, f"sqlite:///{tmp_path / 'game.db'}", server=s3_env)
    client = s3_env.client()
    process = env.popen("backup", "create")
    try:
        def uploading() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"create ended ({process.returncode}) before a multipart upload was seen: "
                                     f"{process.stderr.read()}")
            return bool(client.list_multipart_uploads(Bucket=env.bucket).get("Uploads"))
        wait_for(uploading, timeout=15, what="an incomplete multipart upload")
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == -signal.SIGKILL

    uploads = client.list_multipart_uploads(Bucket=env.bucket)["Uploads"]
    assert len(uploads) == 1 and uploads[0]["Key"].endswith(f"/{DATA}"), uploads
    backup_id = uploads[0]["Key"].removeprefix("repo/").partition("/")[0]
    result = listing(env)
    assert result["backups"] == [] and backup_id in result["leftovers"], result
    refused = env.invoke("restore", backup_id, "--dry-run")
    assert refused.returncode == 4 and f"no backup {backup_id}" in one_error(refused), refused.output
    refused = env.invoke("restore", "latest", "--dry-run")
    assert refused.returncode == 4, refused.output

    _assert_cleaned_by_prune(env, backup_id, backup_id)
    assert [n for n in env.objects() if n != "repository.json" and not n.startswith("journal/")] == []
