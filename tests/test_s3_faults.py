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
    shutil.copyfile(pristine["root"] / "game.db", tmp_path / "game.db")
    env = S3BackupEnv(tmp_path, f"sqlite:///{tmp_path / 'game.db'}", extra_env=dict(pristine["signing"]),
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
