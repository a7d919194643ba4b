"""Encryption at rest (issue 17): backups sealed to age recipients through pyrage.

A real age key pair per recipient (pyrage.x25519.Identity.generate()), real SQLite
databases, the CLI in-process, a real S3 server (moto on 127.0.0.1) for the object-storage
case. Each check is shown failing: a flipped ciphertext byte, a manifest re-hashed over it,
no identity, the wrong identity, an identity file others can read or kept in the repository.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import zstandard

from backup_helpers import BackupEnv, fill_database, one_error, scalar
from s3_helpers import S3BackupEnv, s3_env, s3_server  # noqa: F401 - fixtures

AGE_HEADER = b"age-encryption.org/v1\n"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, dict]:
    """Three age identities, each in its own identity file (mode 0600, as age-keygen writes)."""
    from pyrage import x25519

    directory = tmp_path_factory.mktemp("keys")
    made = {}
    for name in ("first", "second", "stranger"):
        identity = x25519.Identity.generate()
        path = directory / f"{name}.txt"
        path.write_text(f"# created: by the test\n# public key: {identity.to_public()}\n{identity}\n")
        path.chmod(0o600)
        made[name] = {"recipient": str(identity.to_public()), "file": str(path), "identity": identity}
    return made


def _encrypted_env(tmp_path, url, keys, *recipients: str, identity: str = "first") -> BackupEnv:
    return BackupEnv(tmp_path, url, extra_env={
        "INTEGRITY_BACKUPS__ENCRYPT_TO": ",".join(keys[name]["recipient"] for name in recipients),
        "INTEGRITY_BACKUPS__IDENTITY_FILE": keys[identity]["file"] if identity else "",
    })


@pytest.fixture
def env(tmp_path, sqlite_url, keys) -> BackupEnv:
    fill_database(sqlite_url, players=6, results_per_player=15, prefix="secretplayer")
    return _encrypted_env(tmp_path, sqlite_url, keys, "first")


def _manifest(env: BackupEnv, backup_id: str) -> dict:
    return json.loads((env.repo / backup_id / "manifest.json").read_bytes())


def _rewrite_manifest(env: BackupEnv, backup_id: str, document: dict) -> None:
    """Edit a manifest and recompute its hash, as someone who can write the repository could."""
    data = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
    (env.repo / backup_id / "manifest.json").write_bytes(data)
    (env.repo / backup_id / "manifest.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  manifest.json\n")


def _events(env: BackupEnv, backup_id: str) -> list[str]:
    return env.journal_events(backup_id)


# ---------------------------------------------------------------- create


def test_create_writes_only_ciphertext_and_the_manifest_keeps_both_hashes(env, keys):
    import pyrage

    backup_id = env.create()
    directory = env.repo / backup_id
    assert sorted(p.name for p in directory.iterdir()) == ["data.db.zst.age", "manifest.json", "manifest.sha256"]
    ciphertext = (directory / "data.db.zst.age").read_bytes()
    assert ciphertext.startswith(AGE_HEADER) and ZSTD_MAGIC not in ciphertext[:200]
    with pytest.raises(zstandard.ZstdError):  # not a zstd stream: no plaintext in the repository
        zstandard.ZstdDecompressor().decompressobj().decompress(ciphertext)
    assert b"secretplayer" not in ciphertext and b"SQLite format 3" not in ciphertext

    manifest = _manifest(env, backup_id)
    assert manifest["encryption"] == {"scheme": "age", "recipients": [keys["first"]["recipient"]]}
    entry = manifest["files"][0]
    assert entry["name"] == "data.db.zst.age" and entry["compression"] == "zstd"
    assert entry["size"] == len(ciphertext) and entry["sha256"] == hashlib.sha256(ciphertext).hexdigest()
    # raw_* are the plaintext's: what the holder of the identity gets back, decompressed.
    compressed = pyrage.decrypt(ciphertext, [keys["first"]["identity"]])
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(compressed)
    assert entry["raw_size"] == len(raw) and entry["raw_sha256"] == hashlib.sha256(raw).hexdigest()
    assert raw.startswith(b"SQLite format 3")
    # Nothing of the data beyond what an unencrypted manifest holds: the same fields plus encryption.
    plain = BackupEnv(env.tmp_path / "plain", env.url)
    plain_manifest = _manifest(plain, plain.create())
    assert set(manifest) == set(plain_manifest) | {"encryption"}
    assert set(entry) == set(plain_manifest["files"][0])
    assert b"secretplayer" not in (directory / "manifest.json").read_bytes()
    shown = env.invoke("backup", "show", backup_id, INTEGRITY_BACKUPS__IDENTITY_FILE="")
    assert shown.returncode == 0 and f"encrypted age to {keys['first']['recipient']}\n" in shown.stdout


def test_an_unencrypted_repository_has_no_encryption_field_and_check_warns(tmp_path, sqlite_url):
    fill_database(sqlite_url, players=2, results_per_player=5)
    plain = BackupEnv(tmp_path, sqlite_url)
    backup_id = plain.create()
    assert "encryption" not in _manifest(plain, backup_id)
    assert sorted(p.name for p in (plain.repo / backup_id).iterdir())[0] == "data.db.zst"
    code, document = plain.invoke_json("backup", "check")
    findings = {f["name"]: f for f in document["result"]["findings"]}
    assert findings["encryption"]["state"] == "warn"
    assert findings["encryption"]["detail"].startswith("unencrypted repository: ")


def test_backup_check_says_how_many_recipients_and_whether_this_host_can_decrypt(env, keys, tmp_path):
    code, document = env.invoke_json("backup", "check")
    findings = {f["name"]: f for f in document["result"]["findings"]}
    assert findings["encryption"] == {
        "name": "encryption", "state": "ok",
        "detail": f"age, encrypted to 1 recipient; this host can decrypt ([backups] identity_file "
                  f"{keys['first']['file']} holds {keys['first']['recipient']})",
    }
    assert findings["trial backup"]["state"] == "ok", findings
    code, document = env.invoke_json("backup", "check", INTEGRITY_BACKUPS__IDENTITY_FILE="")
    detail = {f["name"]: f for f in document["result"]["findings"]}["encryption"]["detail"]
    assert detail.startswith("age, encrypted to 1 recipient; this host cannot decrypt (no [backups] identity_file)")
    code, document = env.invoke_json("backup", "check", INTEGRITY_BACKUPS__IDENTITY_FILE=keys["stranger"]["file"])
    finding = {f["name"]: f for f in document["result"]["findings"]}["encryption"]
    assert finding["state"] == "warn" and "this host cannot decrypt new backups" in finding["detail"]


def test_a_recipient_that_is_not_one_is_refused_at_load_with_one_line(env, keys):
    completed = env.invoke("backup", "list", INTEGRITY_BACKUPS__ENCRYPT_TO="age1notarecipient")
    assert completed.returncode == 4
    assert one_error(completed).startswith(
        "invalid value 'age1notarecipient' for INTEGRITY_BACKUPS__ENCRYPT_TO ([backups] encrypt_to); allowed: "
        "a list of age X25519 recipients (age1..."
    )
    good = keys["first"]["recipient"]
    broken = good[:-1] + ("q" if good[-1] != "q" else "p")  # the right shape, a checksum that fails
    completed = env.invoke("backup", "list", INTEGRITY_BACKUPS__ENCRYPT_TO=broken)
    assert completed.returncode == 4
    assert f"{broken!r} is not a valid one (its checksum does not match" in one_error(completed)


# ---------------------------------------------------------------- reading


def test_quick_verify_needs_no_identity_deep_verify_and_restore_use_it(env):
    backup_id = env.create()
    quick = env.invoke("backup", "verify", backup_id, INTEGRITY_BACKUPS__IDENTITY_FILE="")
    assert quick.returncode == 0, quick.output
    deep = env.invoke("backup", "verify", backup_id, "--deep")
    assert deep.returncode == 0, deep.output
    assert "deep_verified" in _events(env, backup_id) and "clean" in _events(env, backup_id)
    before = scalar(env.url, "SELECT COUNT(*) FROM results")
    fill_database(env.url, players=2, results_per_player=5, prefix="late")
    restored = env.invoke("--no-input", "restore", backup_id, "--yes")
    assert restored.returncode == 0, restored.output
    assert scalar(env.url, "SELECT COUNT(*) FROM results") == before


def test_no_identity_is_exit_4_naming_the_recipient_and_nothing_is_journalled(env, keys):
    backup_id = env.create()
    recipient = keys["first"]["recipient"]
    expected = (f"backup {backup_id} is encrypted to the age recipient {recipient} and this host has no [backups] "
                "identity_file; set identity_file to the age identity file of one of them")
    for args in (("backup", "verify", backup_id, "--deep"), ("drill",), ("diff", backup_id),
                 ("--no-input", "restore", backup_id, "--yes")):
        completed = env.invoke(*args, INTEGRITY_BACKUPS__IDENTITY_FILE="")
        assert completed.returncode == 4, (args, completed.output)
        assert one_error(completed).startswith(expected), args
    # The host's missing key is not the backup's fault: never deep-failed, never failed.
    assert not {"deep_failed", "failed", "corrupt"} & set(_events(env, backup_id))
    assert env.invoke("backup", "verify", backup_id, "--deep").returncode == 0


def test_the_wrong_identity_is_exit_4_naming_both_recipients(env, keys):
    backup_id = env.create()
    before = scalar(env.url, "SELECT COUNT(*) FROM results")
    fill_database(env.url, players=1, results_per_player=3, prefix="late")
    for args in (("backup", "verify", backup_id, "--deep"), ("--no-input", "restore", backup_id, "--yes")):
        completed = env.invoke(*args, INTEGRITY_BACKUPS__IDENTITY_FILE=keys["stranger"]["file"])
        assert completed.returncode == 4, completed.output
        assert one_error(completed).startswith(
            f"backup {backup_id} is encrypted to the age recipient {keys['first']['recipient']}, not to the identity "
            f"in [backups] identity_file {keys['stranger']['file']} (recipient {keys['stranger']['recipient']}); "
            "set identity_file to the identity of one of those recipients"
        )
    assert scalar(env.url, "SELECT COUNT(*) FROM results") == before + 3  # live untouched
    assert not {"deep_failed", "failed"} & set(_events(env, backup_id))


def test_an_identity_file_missing_open_to_others_inside_the_repository_or_not_a_key_is_exit_4(env, keys, tmp_path):
    backup_id = env.create()
    missing = tmp_path / "nowhere.txt"
    readable = tmp_path / "readable.txt"
    readable.write_text(Path(keys["first"]["file"]).read_text())
    readable.chmod(0o644)
    inside = env.repo / "identity.txt"
    inside.write_text(Path(keys["first"]["file"]).read_text())
    inside.chmod(0o600)
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("AGE-SECRET-KEY-1NOTAKEY\n")
    garbage.chmod(0o600)
    cases = {
        missing: f"[backups] identity_file {missing} does not exist",
        readable: f"[backups] identity_file {readable} is open to others (mode 0644)",
        inside: f"[backups] identity_file {inside} is inside the backup repository {env.repo}",
        garbage: f"[backups] identity_file {garbage} is not an age identity file",
    }
    for path, text in cases.items():
        completed = env.invoke("backup", "verify", backup_id, "--deep", INTEGRITY_BACKUPS__IDENTITY_FILE=str(path))
        assert completed.returncode == 4, completed.output
        message = one_error(completed)
        assert message.startswith(f"backup {backup_id} is encrypted to the age recipient {keys['first']['recipient']}; ")
        assert text in message
        assert "NOTAKEY" not in message  # nothing of the file is echoed
    inside.unlink()


def test_a_flipped_ciphertext_byte_is_exit_5_in_quick_and_deep_verify(env):
    backup_id = env.create()
    data = env.repo / backup_id / "data.db.zst.age"
    damaged = bytearray(data.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    data.write_bytes(bytes(damaged))
    for args in (("backup", "verify", backup_id), ("backup", "verify", backup_id, "--deep")):
        completed = env.invoke(*args, INTEGRITY_BACKUPS__IDENTITY_FILE="")  # the hash needs no key
        assert completed.returncode == 5, completed.output
        assert "data.db.zst.age does not match its SHA-256 in the manifest (damaged or swapped)" in completed.output


def test_a_manifest_rehashed_over_damaged_ciphertext_is_caught_by_decryption(env):
    """Whoever can write the repository can recompute the hashes (signing stops that);
    quick verification then passes, and age's authentication still refuses the data."""
    backup_id = env.create()
    data = env.repo / backup_id / "data.db.zst.age"
    damaged = bytearray(data.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    data.write_bytes(bytes(damaged))
    document = _manifest(env, backup_id)
    document["files"][0]["sha256"] = hashlib.sha256(damaged).hexdigest()
    _rewrite_manifest(env, backup_id, document)
    assert env.invoke("backup", "verify", backup_id).returncode == 0  # the control: hashes alone accept it
    completed = env.invoke("backup", "verify", backup_id, "--deep")
    assert completed.returncode == 5, completed.output
    assert ("data.db.zst.age matches its SHA-256 in the manifest but does not decrypt (decryption error)"
            in completed.output)
    assert "deep_failed" in _events(env, backup_id)


def test_ciphertext_replaced_by_another_plaintext_encrypted_to_the_right_key_is_exit_5(env, keys):
    """A writer of the repository who knows the recipient (a public key) can encrypt data of
    its own and recompute the hashes: what decrypts must still decompress to the raw
    SHA-256 of the manifest (here it is not even zstd)."""
    import pyrage

    backup_id = env.create()
    forged = pyrage.encrypt(b"not a backup " * 1000, [pyrage.x25519.Recipient.from_str(keys["first"]["recipient"])])
    (env.repo / backup_id / "data.db.zst.age").write_bytes(forged)
    document = _manifest(env, backup_id)
    document["files"][0].update(size=len(forged), sha256=hashlib.sha256(forged).hexdigest())
    _rewrite_manifest(env, backup_id, document)
    assert env.invoke("backup", "verify", backup_id).returncode == 0  # the control: hashes alone accept it
    completed = env.invoke("backup", "verify", backup_id, "--deep")
    assert completed.returncode == 5, completed.output
    assert "data.db.zst.age matches its SHA-256 in the manifest but decrypts to data that does not decompress" in completed.output


def test_a_create_killed_after_encrypting_leaves_nothing_visible(env):
    import signal

    crashed = env.run("backup", "create", INTEGRITY_CRASH_AT="create:encrypted")
    assert crashed.returncode == -signal.SIGKILL and "crash point create:encrypted" in crashed.stderr
    assert env.listed_ids() == []
    leftovers = [p for p in env.repo.iterdir() if p.name.startswith(".tmp-")]
    assert len(leftovers) == 1 and sorted(p.name for p in leftovers[0].iterdir()) == ["data.db.zst.age"]
    assert env.invoke("backup", "prune").returncode == 0
    assert not [p for p in env.repo.iterdir() if p.name.startswith(".tmp-")]
    assert env.invoke("backup", "verify", env.create(), "--deep").returncode == 0


def test_encrypted_files_without_the_encryption_field_are_a_corrupt_manifest(env):
    backup_id = env.create()
    document = _manifest(env, backup_id)
    del document["encryption"]
    _rewrite_manifest(env, backup_id, document)
    completed = env.invoke("backup", "verify", backup_id)
    assert completed.returncode == 5
    assert "encryption does not match its files" in completed.output


def test_two_recipients_each_can_restore(tmp_path, sqlite_url, keys):
    fill_database(sqlite_url, players=4, results_per_player=10)
    env = _encrypted_env(tmp_path, sqlite_url, keys, "first", "second")
    backup_id = env.create()
    assert _manifest(env, backup_id)["encryption"]["recipients"] == [keys["first"]["recipient"],
                                                                     keys["second"]["recipient"]]
    before = scalar(env.url, "SELECT COUNT(*) FROM results")
    for name in ("first", "second"):
        fill_database(env.url, players=1, results_per_player=3, prefix=f"late{name}")
        completed = env.invoke("--no-input", "restore", backup_id, "--yes",
                               INTEGRITY_BACKUPS__IDENTITY_FILE=keys[name]["file"])
        assert completed.returncode == 0, completed.output
        assert scalar(env.url, "SELECT COUNT(*) FROM results") == before
    completed = env.invoke("backup", "verify", backup_id, "--deep", INTEGRITY_BACKUPS__IDENTITY_FILE=keys["stranger"]["file"])
    assert completed.returncode == 4
    assert f"is encrypted to 2 age recipients ({keys['first']['recipient']}, {keys['second']['recipient']})" in completed.output


@pytest.mark.postgres
def test_a_postgresql_backup_is_encrypted_and_deep_verifies_through_pg_restore(tmp_path, pg_url, keys):
    fill_database(pg_url, players=2, results_per_player=4, prefix="secretplayer")
    env = _encrypted_env(tmp_path, pg_url, keys, "first")
    backup_id = env.create()
    ciphertext = (env.repo / backup_id / "data.dump.zst.age").read_bytes()
    assert ciphertext.startswith(AGE_HEADER) and b"secretplayer" not in ciphertext
    no_key = env.invoke("backup", "verify", backup_id, "--deep", INTEGRITY_BACKUPS__IDENTITY_FILE="")
    assert no_key.returncode == 4 and keys["first"]["recipient"] in no_key.output
    deep = env.invoke("backup", "verify", backup_id, "--deep")
    assert deep.returncode == 0, deep.output
    assert "deep_verified" in _events(env, backup_id)


# ---------------------------------------------------------------- object storage


def test_create_and_restore_work_encrypted_on_s3(tmp_path, sqlite_url, keys, s3_env):
    fill_database(sqlite_url, players=4, results_per_player=10, prefix="secretplayer")
    env = S3BackupEnv(tmp_path, sqlite_url, server=s3_env, extra_env={
        "INTEGRITY_BACKUPS__ENCRYPT_TO": keys["first"]["recipient"],
        "INTEGRITY_BACKUPS__IDENTITY_FILE": keys["first"]["file"],
    })
    backup_id = env.create()
    objects = env.objects(f"{backup_id}/")
    assert sorted(objects) == [f"{backup_id}/data.db.zst.age", f"{backup_id}/manifest.json", f"{backup_id}/manifest.sha256"]
    ciphertext = objects[f"{backup_id}/data.db.zst.age"]
    assert ciphertext.startswith(AGE_HEADER) and b"secretplayer" not in ciphertext
    assert env.invoke("backup", "verify", backup_id, INTEGRITY_BACKUPS__IDENTITY_FILE="").returncode == 0
    before = scalar(env.url, "SELECT COUNT(*) FROM results")
    fill_database(env.url, players=1, results_per_player=3, prefix="late")
    no_key = env.invoke("--no-input", "restore", backup_id, "--yes", INTEGRITY_BACKUPS__IDENTITY_FILE="")
    assert no_key.returncode == 4 and keys["first"]["recipient"] in no_key.output
    restored = env.invoke("--no-input", "restore", backup_id, "--yes")
    assert restored.returncode == 0, restored.output
    assert scalar(env.url, "SELECT COUNT(*) FROM results") == before


def test_backup_copy_moves_the_ciphertext_and_a_drill_from_the_copy_decrypts_it(tmp_path, sqlite_url, keys):
    """A copy needs no key (it moves and re-hashes ciphertext); reading the copy does."""
    fill_database(sqlite_url, players=3, results_per_player=8)
    env = _encrypted_env(tmp_path, sqlite_url, keys, "first")
    config = env.data_home / "typing-game" / "integrity.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[[repositories]]\nname = "usb"\nlocation = "{tmp_path / "usb"}"\n', encoding="utf-8")
    assert env.invoke("--no-input", "init").returncode == 0
    backup_id = env.create()
    copied = env.invoke("backup", "copy", backup_id, "--to", "usb", INTEGRITY_BACKUPS__IDENTITY_FILE="")
    assert copied.returncode == 0, copied.output
    stored = (tmp_path / "usb" / backup_id / "data.db.zst.age").read_bytes()
    assert stored == (env.repo / backup_id / "data.db.zst.age").read_bytes() and stored.startswith(AGE_HEADER)
    no_key = env.invoke("drill", "--from", "usb", INTEGRITY_BACKUPS__IDENTITY_FILE="")
    assert no_key.returncode == 4 and keys["first"]["recipient"] in no_key.output
    drill = env.invoke("drill", "--from", "usb")
    assert drill.returncode == 0, drill.output
