"""Signed manifests (issue 14, item 13): hashes are unkeyed, so whoever can write the
repository can edit a backup's data, recompute every hash, and quick verify, deep verify
and restore all accept it. With `[backups] signing_public_key` and `signing_key_file` set,
every manifest is signed (manifest.sig, Ed25519) and every read of a manifest checks it.

The forgery edits usernames inside the data file (same length, so the SQLite file and the
PostgreSQL custom-format archive stay valid), recompresses it and rewrites the manifest
and manifest.sha256 to match: exactly what `_forge` in test_backups_verify.py does.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import zstandard

from restore_helpers import drop_restore_leftovers_after
from backup_helpers import BackupEnv, fill_database, one_error, write_manifest
from integrity.backups.archive import compress_stream
from integrity.backups.repository import MANIFEST, MANIFEST_SIGNATURE

VICTIM, FORGED = b"victim", b"forged"  # same length: the forged file stays a valid database


def _keygen(env: BackupEnv, out: Path) -> dict:
    code, document = env.invoke_json("backup", "keygen", "--out", str(out))
    assert code == 0, document
    return document["result"]


def _signing_env(key: dict) -> dict[str, str]:
    return {
        "INTEGRITY_BACKUPS__SIGNING_PUBLIC_KEY": key["public_key"],
        "INTEGRITY_BACKUPS__SIGNING_KEY_FILE": key["key_file"],
    }


@pytest.fixture
def keys(tmp_path) -> Path:
    """A directory for keys outside the repository."""
    directory = tmp_path / "keys"
    directory.mkdir()
    return directory


def _signed_env(tmp_path, url, keys) -> tuple[BackupEnv, dict]:
    env = BackupEnv(tmp_path, url)
    key = _keygen(env, keys / "signing.key")
    env.extra_env.update(_signing_env(key))
    return env, key


def _usernames(url: str) -> list[str]:
    import sqlalchemy as sa

    from game_core.db import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text("SELECT username FROM players ORDER BY id")).scalars().all()
    finally:
        engine.dispose()


def forge_usernames(env: BackupEnv, backup_id: str) -> None:
    """Rename every victim player in the backup's data and recompute every hash, so that
    the data file, the manifest and manifest.sha256 agree. manifest.sig is left alone."""
    repository = env.repository()  # no verifier: the attacker reads whatever is there
    manifest = repository.read_manifest(backup_id)
    entry = manifest.files[0]
    data = repository.path_of(backup_id) / entry.name
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(data.read_bytes())
    assert raw.count(VICTIM) >= 3, "the forgery must change something"
    edited = env.tmp_path / "edited.raw"
    edited.write_bytes(raw.replace(VICTIM, FORGED))
    data.unlink()
    with edited.open("rb") as handle:
        digest = compress_stream(handle, data, level=3)
    write_manifest(repository.path_of(backup_id), replace(manifest, files=(replace(
        entry, size=digest.size, sha256=digest.sha256, raw_size=digest.raw_size, raw_sha256=digest.raw_sha256),)))


def _attacker_signature(manifest: bytes, claimed_key_id: str | None) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from integrity.backups.signing import key_id

    private = Ed25519PrivateKey.generate()
    own = key_id(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    signature = base64.b64encode(private.sign(manifest)).decode()
    return f"ed25519 {claimed_key_id or own} {signature}\n".encode()


def _resign(kind: str, env: BackupEnv, backup_id: str, other_id: str, key: dict) -> str:
    """After forging, what the attacker does with manifest.sig; returns the expected reason."""
    directory = env.repo / backup_id
    signature = directory / MANIFEST_SIGNATURE
    manifest = (directory / MANIFEST).read_bytes()
    if kind == "hashes-recomputed":
        return "does not match manifest.json"
    if kind == "signature-removed":
        signature.unlink()
        return "is not signed (no manifest.sig)"
    if kind == "signed-by-another-key":
        signature.write_bytes(_attacker_signature(manifest, None))
        return "not by the configured key " + key["key_id"]
    if kind == "another-key-claiming-the-configured-id":
        signature.write_bytes(_attacker_signature(manifest, key["key_id"]))
        return "does not match manifest.json"
    if kind == "signature-of-another-backup":
        signature.write_bytes((env.repo / other_id / MANIFEST_SIGNATURE).read_bytes())
        return "does not match manifest.json"
    if kind == "garbage-signature":
        signature.write_bytes(os.urandom(90))
        return "manifest.sig"
    raise AssertionError(kind)


RESIGNINGS = (
    "hashes-recomputed",
    "signature-removed",
    "signed-by-another-key",
    "another-key-claiming-the-configured-id",
    "signature-of-another-backup",
    "garbage-signature",
)


# ---------------------------------------------------------------- the forgery, signing off and on


def test_without_signing_a_forgery_with_recomputed_hashes_verifies_and_is_restored(tmp_path, database_url, request):
    """The limitation signing removes: unkeyed hashes prove intact, not authentic."""
    fill_database(database_url, players=4, results_per_player=5, prefix="victim")
    drop_restore_leftovers_after(request, database_url)  # the restore keeps the old database
    env = BackupEnv(tmp_path, database_url)
    backup_id = env.create()
    forge_usernames(env, backup_id)
    assert env.invoke("backup", "verify", backup_id).returncode == 0
    assert env.invoke("backup", "verify", "--deep", backup_id).returncode == 0
    restored = env.invoke("--no-input", "restore", backup_id, "--yes", "--terminate-connections")
    assert restored.returncode == 0, restored.output
    assert all(name.startswith("forged") for name in _usernames(database_url))


def test_with_signing_the_same_forgery_is_refused_by_verify_and_restore(tmp_path, database_url, keys):
    fill_database(database_url, players=4, results_per_player=5, prefix="victim")
    env, key = _signed_env(tmp_path, database_url, keys)
    backup_id = env.create()
    assert (env.repo / backup_id / MANIFEST_SIGNATURE).is_file()
    assert env.invoke("backup", "verify", "--deep", backup_id).returncode == 0  # signed and genuine: accepted
    forge_usernames(env, backup_id)

    quick = env.invoke("backup", "verify", backup_id)
    assert quick.returncode == 5, quick.output
    assert env.journal_events(backup_id)[-1] == "corrupt"
    code, document = env.invoke_json("backup", "verify", "--deep", backup_id)
    assert code == 5 and document["result"]["results"][0]["deep"] is None, document
    assert "does not match manifest.json" in document["result"]["results"][0]["problems"][0]
    restored = env.invoke("--no-input", "restore", backup_id, "--yes", "--terminate-connections")
    assert restored.returncode == 5, restored.output
    assert "does not match manifest.json" in restored.output
    assert all(name.startswith("victim") for name in _usernames(database_url))  # live untouched
    assert env.journal_events(backup_id)[-1] == "corrupt"


@pytest.mark.parametrize("kind", RESIGNINGS)
def test_every_way_of_handling_the_signature_after_a_forgery_is_refused(tmp_path, sqlite_url, keys, kind):
    fill_database(sqlite_url, players=4, results_per_player=5, prefix="victim")
    env, key = _signed_env(tmp_path, sqlite_url, keys)
    other_id = env.create()
    backup_id = env.create()
    forge_usernames(env, backup_id)
    reason = _resign(kind, env, backup_id, other_id, key)
    code, document = env.invoke_json("backup", "verify", backup_id)
    assert code == 5, document
    problem = document["result"]["results"][0]["problems"][0]
    assert reason in problem, problem
    assert env.journal_events(backup_id)[-1] == "corrupt"
    restored = env.invoke("--no-input", "restore", backup_id, "--yes")
    assert restored.returncode == 5 and reason in restored.output, restored.output
    assert all(name.startswith("victim") for name in _usernames(sqlite_url))
    # the untouched backup still verifies: one bad backup does not block the others
    assert env.invoke("backup", "verify", other_id).returncode == 0


READERS = {
    "verify": lambda backup_id: ["backup", "verify", backup_id],
    "verify --deep": lambda backup_id: ["backup", "verify", "--deep", backup_id],
    "restore --dry-run": lambda backup_id: ["restore", backup_id, "--dry-run"],
    "drill": lambda backup_id: ["drill", "--backup", backup_id],
    "diff": lambda backup_id: ["diff", backup_id],
    "salvage --dry-run": lambda backup_id: ["salvage", "--from-backup", backup_id, "--dry-run"],
    "migrate dry-run": lambda backup_id: ["migrate", "dry-run", "--from-backup", backup_id],
}


@pytest.mark.parametrize("reader", list(READERS))
def test_every_reader_of_a_backup_refuses_a_forged_one_with_exit_5(tmp_path, sqlite_url, keys, reader):
    fill_database(sqlite_url, players=4, results_per_player=5, prefix="victim")
    env, _ = _signed_env(tmp_path, sqlite_url, keys)
    backup_id = env.create()
    forge_usernames(env, backup_id)
    result = env.invoke(*READERS[reader](backup_id))
    assert result.returncode == 5, result.output
    assert "does not match manifest.json" in result.output


def test_a_forged_backup_is_listed_corrupt_and_never_latest(tmp_path, sqlite_url, keys):
    fill_database(sqlite_url, players=4, results_per_player=5, prefix="victim")
    env, _ = _signed_env(tmp_path, sqlite_url, keys)
    good = env.create()
    fill_database(sqlite_url, players=1, results_per_player=5, seed=1, prefix="victim")
    forged = env.create()
    forge_usernames(env, forged)
    code, document = env.invoke_json("backup", "list")
    assert code == 0
    states = {b["id"]: b["states"] for b in document["result"]["backups"]}
    assert states[forged] == ["CORRUPT"] and "CORRUPT" not in states[good], states
    code, plan = env.invoke_json("restore", "latest", "--dry-run")
    assert code == 0 and plan["result"]["backup_id"] == good, plan


# ---------------------------------------------------------------- unsigned backups


def test_an_unsigned_backup_is_refused_once_signing_is_configured(tmp_path, sqlite_url, keys):
    fill_database(sqlite_url, players=3, results_per_player=5)
    env = BackupEnv(tmp_path, sqlite_url)
    old = env.create()  # before signing existed
    assert not (env.repo / old / MANIFEST_SIGNATURE).exists()
    assert env.invoke("backup", "verify", old).returncode == 0  # signing off: old backups are accepted
    key = _keygen(env, keys / "signing.key")
    env.extra_env.update(_signing_env(key))
    code, document = env.invoke_json("backup", "verify", old)
    assert code == 5
    assert document["result"]["results"][0]["problems"][0].startswith(f"backup {old} is not signed (no manifest.sig) but signing is configured")
    restored = env.invoke("--no-input", "restore", old, "--yes")
    assert restored.returncode == 5, restored.output
    new = env.create()  # and the next backup is signed
    assert env.invoke("backup", "verify", new).returncode == 0


def test_a_host_with_only_the_public_key_verifies_but_does_not_back_up(tmp_path, sqlite_url, keys):
    fill_database(sqlite_url, players=3, results_per_player=5)
    env, key = _signed_env(tmp_path, sqlite_url, keys)
    backup_id = env.create()
    reader = {"INTEGRITY_BACKUPS__SIGNING_KEY_FILE": ""}
    assert env.invoke("backup", "verify", "--deep", backup_id, **reader).returncode == 0
    result = env.invoke("backup", "create", **reader)  # in this process: the refusal is what is proven
    assert result.returncode == 4, result.output
    assert one_error(result).startswith(f"signing is configured ([backups] signing_public_key, key {key['key_id']}) but this host has no")
    assert env.repository().backup_ids() == [backup_id]


# ---------------------------------------------------------------- the private key's file


def _refusals(tmp_path: Path, keys: Path, key: dict) -> dict[str, tuple[dict[str, str], str]]:
    """kind -> (environment, start of the Error line). Each key file is a real key (or a
    copy of it) made unusable in one way."""
    real = Path(key["key_file"])
    inside = tmp_path / "repo" / "signing.key"
    inside.write_bytes(real.read_bytes())
    inside.chmod(0o600)
    cases = {}
    for name, mode in (("world-readable", 0o644), ("group-readable", 0o640), ("world-writable", 0o602)):
        path = keys / f"{name}.key"
        path.write_bytes(real.read_bytes())
        path.chmod(mode)
        cases[name] = ({"INTEGRITY_BACKUPS__SIGNING_KEY_FILE": str(path)},
                       f"[backups] signing_key_file {path} is open to others (mode {mode:04o})")
    cases["inside-the-repository"] = ({"INTEGRITY_BACKUPS__SIGNING_KEY_FILE": str(inside)},
                                      f"[backups] signing_key_file {inside} is inside the backup repository")
    missing = keys / "missing.key"
    cases["missing"] = ({"INTEGRITY_BACKUPS__SIGNING_KEY_FILE": str(missing)},
                        f"[backups] signing_key_file {missing} does not exist")
    garbage = keys / "garbage.key"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    garbage.chmod(0o600)
    cases["not-a-key"] = ({"INTEGRITY_BACKUPS__SIGNING_KEY_FILE": str(garbage)},
                          f"[backups] signing_key_file {garbage} is not an unencrypted Ed25519 private key")
    other = _keygen(BackupEnv(tmp_path, "sqlite:///unused.db"), keys / "other.key")
    cases["not-the-pair"] = ({"INTEGRITY_BACKUPS__SIGNING_KEY_FILE": other["key_file"]},
                             f"the key in [backups] signing_key_file {other['key_file']} (key {other['key_id']}) is not the pair of")
    cases["no-public-key"] = ({"INTEGRITY_BACKUPS__SIGNING_PUBLIC_KEY": ""},
                              "[backups] signing_key_file is set but signing_public_key is not")
    cases["malformed-public-key"] = ({"INTEGRITY_BACKUPS__SIGNING_PUBLIC_KEY": "bm90IGEga2V5"},
                                     "invalid value 'bm90IGEga2V5' for [backups] signing_public_key")
    return cases


def test_every_unusable_signing_key_refuses_backup_create_with_exit_4_and_writes_nothing(tmp_path, sqlite_url, keys):
    fill_database(sqlite_url, players=3, results_per_player=5)
    env, key = _signed_env(tmp_path, sqlite_url, keys)
    pem = Path(key["key_file"]).read_text()
    for kind, (extra, expected) in _refusals(tmp_path, keys, key).items():
        result = env.invoke("backup", "create", **extra)
        assert result.returncode == 4, (kind, result.output)
        error = [line for line in result.output.splitlines() if line.startswith("Error: ")]
        assert error and error[0].removeprefix("Error: ").startswith(expected), (kind, result.output)
        assert pem.splitlines()[1] not in result.output
        assert env.repository().backup_ids() == [] and env.repository().leftovers() == [], kind


def test_backup_check_says_whether_signing_is_configured_and_whether_the_pair_matches(tmp_path, sqlite_url, keys):
    fill_database(sqlite_url, players=3, results_per_player=5)
    env = BackupEnv(tmp_path, sqlite_url)

    def findings(**extra):
        code, document = env.invoke_json("backup", "check", **extra)
        return code, {f["name"]: (f["state"], f["detail"]) for f in document["result"]["findings"]}

    code, found = findings()
    assert code == 0 and found["signing"][0] == "warn"
    assert found["signing"][1].startswith("not configured: anyone who can write the repository can forge a backup")

    key = _keygen(env, keys / "signing.key")
    env.extra_env.update(_signing_env(key))
    code, found = findings()
    assert code == 0, found
    assert found["signing"] == ("ok", (
        f"Ed25519, key {key['key_id']}: [backups] signing_key_file {key['key_file']} matches signing_public_key; "
        "new backups are signed, unsigned or wrongly signed ones are refused"))
    assert found["trial backup"][0] == "ok"  # the trial backup was signed and its signature verified

    for kind, (extra, expected) in _refusals(tmp_path, keys, key).items():
        code, found = findings(**extra)
        assert code == 4, (kind, found)
        assert found["signing"][0] == "fail" and found["signing"][1].startswith(expected), (kind, found["signing"])
        assert "trial backup" not in found, kind


# ---------------------------------------------------------------- keygen and secrets


def test_keygen_writes_a_private_key_only_its_owner_reads_and_prints_the_config_lines(tmp_path, sqlite_url, keys):
    env = BackupEnv(tmp_path, sqlite_url)
    out = keys / "signing.key"
    result = env.invoke("backup", "keygen", "--out", str(out))
    assert result.returncode == 0, result.output
    assert os.stat(out).st_mode & 0o777 == 0o600
    assert out.read_text().startswith("-----BEGIN PRIVATE KEY-----\n")
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"wrote a new Ed25519 private key to {out} (mode 0600, key ")
    assert lines[2] == "  [backups]"
    assert lines[3].startswith('  signing_public_key = "') and len(lines[3].split('"')[1]) == 44
    assert lines[4] == f'  signing_key_file = "{out}"'
    assert out.read_text().splitlines()[1] not in result.output

    again = env.invoke("backup", "keygen", "--out", str(out))
    assert again.returncode == 4
    assert f"Error: --out {out} already exists; a key is never overwritten" in again.output
    inside = env.invoke("backup", "keygen", "--out", str(env.repo / "signing.key"))
    assert inside.returncode == 4 and "is inside the backup repository" in inside.output
    assert not (env.repo / "signing.key").exists()


def test_the_private_key_never_appears_in_any_output_ledger_journal_manifest_or_metrics(tmp_path, sqlite_url, keys):
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, load_pem_private_key

    fill_database(sqlite_url, players=3, results_per_player=5)
    env = BackupEnv(tmp_path, sqlite_url)
    out = keys / "signing.key"
    outputs = [env.run("backup", "keygen", "--out", str(out)), env.run("--json", "backup", "keygen", "--out", str(keys / "2.key"))]
    key = {"key_file": str(out), "public_key": outputs[0].stdout.split('signing_public_key = "')[1].split('"')[0]}
    env.extra_env.update(_signing_env(key))
    backup_id = env.create()
    leaky = keys / "leaky.key"
    leaky.write_bytes(out.read_bytes())
    leaky.chmod(0o644)
    for args, extra in (
        (("backup", "create"), {}),
        (("--json", "backup", "create"), {}),
        (("backup", "verify", "--deep", backup_id), {}),
        (("backup", "check"), {}),
        (("--json", "backup", "check"), {"INTEGRITY_BACKUPS__SIGNING_KEY_FILE": str(leaky)}),
        (("backup", "create"), {"INTEGRITY_BACKUPS__SIGNING_KEY_FILE": str(leaky)}),
        (("-v", "backup", "create"), {"INTEGRITY_BACKUPS__SIGNING_KEY_FILE": str(keys / "2.key")}),
        (("status",), {}),
        (("history",), {}),
    ):
        outputs.append(env.invoke(*args, **extra))  # in process: the same outputs, the same ledger, faster

    private = load_pem_private_key(out.read_bytes(), password=None)
    raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    secrets = {out.read_text().splitlines()[1], base64.b64encode(raw).decode(), raw.hex()}
    for key_file in (keys / "2.key",):
        secrets.add(key_file.read_text().splitlines()[1])
    places = [o.stdout + o.stderr + getattr(o, "output", "") for o in outputs]
    state = env.data_home / "typing-game" / "state"
    for path in [*state.rglob("*"), *env.repo.rglob("*")]:
        if path.is_file():
            places.append(path.read_bytes().decode("latin-1"))
    assert any("ledger" in str(p) for p in state.rglob("*")) and any(p.suffix == ".prom" for p in state.rglob("*"))
    for secret in secrets:
        assert not [place[:200] for place in places if secret in place]


def test_help_does_not_load_the_crypto_library():
    for args in (["--help"], ["backup", "--help"], ["backup", "keygen", "--help"]):
        probe = (
            "import json, sys\n"
            f"sys.argv = ['integrity', *{args!r}]\n"
            "from integrity.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('\\n' + json.dumps(sorted(sys.modules)))\n"
        )
        completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
        loaded = set(json.loads(completed.stdout.strip().splitlines()[-1]))
        assert "typer" in loaded and "cryptography" not in loaded, args


def test_every_repository_built_from_the_settings_checks_signatures():
    """Signatures are checked in Repository.read_manifest, so a Repository built without the
    configured key would read manifests unchecked: every one goes through Repository.of,
    except backup check's space estimate (reads sizes only, and reports signing as a
    finding of its own)."""
    root = Path(__file__).resolve().parents[1] / "integrity"
    unchecked = sorted(
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        for line in path.read_text(encoding="utf-8").splitlines()
        if "Repository(settings" in line or "Repository(ctx.obj.settings" in line
    )
    assert unchecked == ["backups/check.py"], unchecked
