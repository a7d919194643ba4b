"""`integrity backup create`: consistent online backups on both engines while the game
writes, a manifest that describes exactly the copy, crash safety at every named phase
and under random SIGKILLs, and one writer per repository.

Everything runs the real CLI as a subprocess on real SQLite files and the real
PostgreSQL server (DESIGN.md sections 5-8).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import time

import pytest
import sqlalchemy as sa

from backup_helpers import (
    CRASH_PHASES,
    SECRET,
    BackupEnv,
    background_writer,
    fill_database,
    fill_large_sqlite,
    live_statistics,
    one_error,
    restore_sqlite_copy,
    scalar,
    sha256_file,
    wait_for,
    with_password,
)
from game_core.schema_state import head_revision
from integrity.backups.repository import ID_PATTERN, MANIFEST, MANIFEST_HASH, TEMP_PREFIX, BackupNotFound


@pytest.fixture
def env(tmp_path, sqlite_url) -> BackupEnv:
    fill_database(sqlite_url, players=5, results_per_player=20)
    return BackupEnv(tmp_path, sqlite_url)


def _visible_dirs(env: BackupEnv) -> list[str]:
    if not env.repo.is_dir():
        return []
    return sorted(p.name for p in env.repo.iterdir() if p.is_dir() and ID_PATTERN.match(p.name))


def _leftovers(env: BackupEnv) -> list[str]:
    if not env.repo.is_dir():
        return []
    return sorted(p.name for p in env.repo.iterdir() if p.name.startswith(TEMP_PREFIX))


# ---------------------------------------------------------------- create while the game writes


def test_create_while_a_writer_commits_describes_exactly_the_copy(database_url, tmp_path):
    postgres = database_url.startswith("postgresql")
    fill_database(database_url, players=8, results_per_player=40)
    url = with_password(database_url) if postgres else database_url
    env = BackupEnv(tmp_path, url)
    identity = scalar(database_url, "SELECT identity_uuid FROM store_identity WHERE id = 1")

    with background_writer(database_url, tmp_path) as writer:
        results_before = scalar(database_url, "SELECT COUNT(*) FROM results")
        created = env.run("--json", "backup", "create", "--label", "nightly")
        assert created.returncode == 0, created.stderr
        backed_up = json.loads(created.stdout)["result"]["manifest"]["tables"]["results"]["rows"]
        wait_for(lambda: scalar(database_url, "SELECT COUNT(*) FROM results") > backed_up, what="a commit after the backup")
    results_after = scalar(database_url, "SELECT COUNT(*) FROM results")
    assert writer.committed >= 3

    backup_id = json.loads(created.stdout)["result"]["manifest"]["id"]
    assert ID_PATTERN.match(backup_id)
    directory = env.repo / backup_id
    manifest = env.repository().read_manifest(backup_id)

    # What the manifest says about the source.
    assert manifest.id == backup_id
    assert manifest.engine == ("postgresql" if postgres else "sqlite")
    assert manifest.label == "nightly"
    assert manifest.source_identity == identity
    assert manifest.revision == head_revision()
    assert set(manifest.tables) == {"store_identity", "players", "results", "progress", "personal_bests"}
    if postgres:
        assert manifest.source_path is None
        assert sa.make_url(database_url).database in manifest.source_url
        assert manifest.tool["pg_dump"] and manifest.tool["server_major"]
    else:
        assert manifest.source_path == str(sa.make_url(database_url).database)
    # Invariant 7: the password appears nowhere.
    for text in (manifest.source_url, (directory / MANIFEST).read_text(), created.stdout, created.stderr):
        assert SECRET not in text

    # Taken while the writer committed: at least what was there before, less than after.
    assert results_before <= manifest.tables["results"]["rows"] < results_after

    # The files on disk are exactly those of the manifest, with its sizes and hashes.
    assert sorted(p.name for p in directory.iterdir()) == sorted([MANIFEST, MANIFEST_HASH, *(e.name for e in manifest.files)])
    for entry in manifest.files:
        assert entry.kind == ("pg-custom" if postgres else "sqlite-db")
        assert (directory / entry.name).stat().st_size == entry.size > 0
        assert sha256_file(directory / entry.name) == entry.sha256
        assert entry.raw_size > entry.size  # compressed
    assert (directory / MANIFEST_HASH).read_text() == f"{sha256_file(directory / MANIFEST)}  {MANIFEST}\n"
    assert env.journal_events(backup_id) == ["intact"]
    assert _leftovers(env) == []

    if not postgres:
        # An independent restore: the copy holds exactly the manifest's counts and aggregates.
        copy = restore_sqlite_copy(env.repository(), backup_id, tmp_path / "restored.db")
        assert live_statistics(f"sqlite:///{copy}") == manifest.tables

    # Deep verification restores it (a scratch database on PostgreSQL) and compares the
    # counts, aggregates and audits: consistent only if they came from the dumped snapshot.
    verified = env.invoke("backup", "verify", "--deep", backup_id)
    assert verified.returncode == 0, verified.output
    assert env.journal_events(backup_id) == ["intact", "intact", "deep_verified", "clean"]


def test_create_counts_come_from_the_copy_not_the_live_database(env, tmp_path):
    """Counts taken before or after the copy would differ from it under writes; the
    manifest must equal the restored copy while the live database has moved on."""
    with background_writer(env.url, tmp_path, min_commits=5):
        backup_id = env.create()
        live_then = scalar(env.url, "SELECT COUNT(*) FROM results")
        wait_for(lambda: scalar(env.url, "SELECT COUNT(*) FROM results") > live_then, what="a commit after the backup")
    manifest = env.repository().read_manifest(backup_id)
    copy = restore_sqlite_copy(env.repository(), backup_id, tmp_path / "copy.db")
    assert live_statistics(f"sqlite:///{copy}") == manifest.tables
    assert live_statistics(env.url)["results"] != manifest.tables["results"]


# ---------------------------------------------------------------- crash points


@pytest.mark.parametrize("phase", CRASH_PHASES)
def test_crash_point_leaves_nothing_visible_or_restorable(env, phase):
    good = env.create()
    crashed = env.run("backup", "create", INTEGRITY_CRASH_AT=phase)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert f"crash point {phase}: SIGKILL" in crashed.stderr

    new_dirs = [d for d in _visible_dirs(env) if d != good]
    listed = env.listed_ids()
    if phase == "create:renamed":
        # Renamed into place and fsynced, killed before the journal line: complete and
        # listed, but not yet known intact until someone verifies it.
        assert len(new_dirs) == 1 and listed == [good, new_dirs[0]]
        assert env.journal_events(new_dirs[0]) == []
        assert _leftovers(env) == []
        verified = env.invoke("backup", "verify", new_dirs[0])
        assert verified.returncode == 0, verified.output
        assert env.journal_events(new_dirs[0]) == ["intact"]
    else:
        assert new_dirs == [] and listed == [good]
        leftovers = _leftovers(env)
        assert len(leftovers) == 1, leftovers
        temp_name = leftovers[0]
        temp_id = temp_name.removeprefix(TEMP_PREFIX)
        assert ID_PATTERN.match(temp_id)
        # Nothing can name it: not by its directory name, nor by the id inside it.
        for name in (temp_name, temp_id, f"../{env.repo.name}/{temp_name}"):
            for command in (("backup", "verify", name), ("backup", "show", name), ("backup", "pin", name)):
                refused = env.invoke(*command)
                assert refused.returncode == 4, (command, refused.output)
                assert "backup" in one_error(refused)
            with pytest.raises(BackupNotFound):
                env.repository().read_manifest(name)
        assert env.journal_events(temp_id) == []
        # `verify --all` sees only the good one.
        code, document = env.invoke_json("backup", "verify", "--all")
        assert code == 0 and [r["backup_id"] for r in document["result"]["results"]] == [good]

    pruned = env.invoke("backup", "prune")
    assert pruned.returncode == 0, pruned.output
    assert _leftovers(env) == []
    assert good in _visible_dirs(env)
    assert env.invoke("backup", "verify", "--all").returncode == 0


@pytest.mark.postgres
@pytest.mark.parametrize("phase", ["create:compressed"])
def test_crash_point_on_postgresql(pg_url, tmp_path, phase):
    fill_database(pg_url, players=3, results_per_player=10)
    env = BackupEnv(tmp_path, pg_url)
    crashed = env.run("backup", "create", INTEGRITY_CRASH_AT=phase)
    assert crashed.returncode == -signal.SIGKILL and f"crash point {phase}" in crashed.stderr
    assert env.listed_ids() == []
    assert len(_leftovers(env)) == 1
    assert env.invoke("backup", "verify").returncode == 4  # nothing to verify
    assert env.invoke("backup", "prune").returncode == 0
    assert _leftovers(env) == []
    # The next backup works: the killed run held no lock that outlived it.
    backup_id = env.create()
    assert env.invoke("backup", "verify", backup_id).returncode == 0


# ---------------------------------------------------------------- random SIGKILLs


def test_random_sigkills_leave_no_partial_backup(tmp_path, sqlite_url):
    counts = fill_large_sqlite(sqlite_url)
    assert counts["results"] >= 200_000
    env = BackupEnv(tmp_path, sqlite_url)
    # A fixed seed: the kill points are spread over the work as a random draw spreads them,
    # and a failure is reproduced by running the test again (a suite must be deterministic).
    seed = 20261207
    rng = random.Random(seed)

    def start_and_wait_for_work():
        """A create subprocess, once its temporary directory exists (start-up is over)."""
        known = set(_leftovers(env))
        process = env.popen("backup", "create")
        wait_for(lambda: process.poll() is not None or set(_leftovers(env)) - known, what="the backup to start")
        return process

    # Two uninterrupted runs measure how long the work takes; the shorter one counts (the
    # first reads a cold file, and a loaded machine makes single runs vary).
    durations = []
    for _ in range(2):
        process = start_and_wait_for_work()
        started = time.monotonic()
        process.communicate(timeout=120)
        durations.append(time.monotonic() - started)
        assert process.returncode == 0
    work = min(durations)
    complete = _visible_dirs(env)
    assert len(complete) == 2
    mid_work = 0
    for attempt in range(4):
        before = _visible_dirs(env)
        leftovers_before = len(_leftovers(env))
        process = start_and_wait_for_work()
        # Three kills well inside the work, the last one anywhere up to just after its end.
        time.sleep(rng.uniform(0, 0.7 * work) if attempt < 3 else rng.uniform(0, 1.1 * work))
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
        after = _visible_dirs(env)
        # At most the one new backup, and only ever a complete one.
        assert set(before) <= set(after) and len(after) - len(before) <= 1, seed
        assert env.listed_ids() == after
        mid_work += len(_leftovers(env)) > leftovers_before
    assert mid_work >= 1, f"no kill landed while a backup was being written (seed {seed})"

    code, document = env.invoke_json("backup", "verify", "--all")
    assert code == 0, (seed, document)
    assert [r["backup_id"] for r in document["result"]["results"]] == _visible_dirs(env)
    assert set(complete) <= set(_visible_dirs(env))
    assert env.invoke("backup", "prune").returncode == 0
    assert _leftovers(env) == []


# ---------------------------------------------------------------- one writer per repository


def _stopped_inside_the_lock(env: BackupEnv):
    """A `backup create` frozen (SIGSTOP) while it holds the repository's writer lock."""
    holder = env.popen("backup", "create")
    notes = env.repo / "locks" / "writer.lock.holders"
    wait_for(lambda: any(f"-{holder.pid}-" in p.name for p in notes.glob("*.json")) if notes.is_dir() else False,
             what="the first create to take the lock")
    os.kill(holder.pid, signal.SIGSTOP)
    return holder


def test_second_concurrent_create_exits_4_naming_the_holder(env):
    holder = _stopped_inside_the_lock(env)
    try:
        second = env.run("backup", "create")
    finally:
        os.kill(holder.pid, signal.SIGCONT)
    out, err = holder.communicate(timeout=60)
    assert holder.returncode == 0, err
    assert second.returncode == 4, second.stderr
    message = one_error(second)
    assert f"locked by 'backup create' (pid {holder.pid} on {socket.gethostname()}" in message
    assert "--lock-wait" in message
    listed = env.listed_ids()
    assert len(listed) == 1 and _leftovers(env) == []
    assert env.invoke("backup", "verify", "--all").returncode == 0


def _has_open(pid: int, path) -> bool:
    fds = f"/proc/{pid}/fd"
    try:
        return any(os.readlink(os.path.join(fds, fd)) == str(path) for fd in os.listdir(fds))
    except OSError:
        return False


def test_concurrent_creates_with_lock_wait_both_succeed(env):
    if not os.path.isdir(f"/proc/{os.getpid()}/fd"):
        pytest.skip("needs /proc to see the second create waiting on the lock")
    holder = _stopped_inside_the_lock(env)
    try:
        waiter = env.popen("backup", "create", "--lock-wait", "60")
        # It has opened the lock file: it is in its wait loop, the lock being held.
        wait_for(lambda: _has_open(waiter.pid, env.repo / "locks" / "writer.lock"), what="the second create to wait")
        assert waiter.poll() is None
    finally:
        os.kill(holder.pid, signal.SIGCONT)
    holder.communicate(timeout=60)
    _, waiter_err = waiter.communicate(timeout=90)
    assert holder.returncode == 0 and waiter.returncode == 0, waiter_err
    listed = env.listed_ids()
    assert len(listed) == 2 and _leftovers(env) == []
    code, document = env.invoke_json("backup", "verify", "--all")
    assert code == 0 and {r["quick"] for r in document["result"]["results"]} == {"ok"}


def test_unsynchronised_concurrent_creates_never_corrupt_the_repository(env):
    processes = [env.popen("backup", "create") for _ in range(3)]
    codes = []
    for process in processes:
        _, err = process.communicate(timeout=90)
        codes.append(process.returncode)
        if process.returncode == 4:
            assert "locked by 'backup create'" in err
    assert set(codes) <= {0, 4} and 0 in codes
    assert len(env.listed_ids()) == codes.count(0)
    assert _leftovers(env) == []
    assert env.invoke("backup", "verify", "--all").returncode == 0


def test_ids_sort_in_creation_order_within_one_second(env):
    """Ids have one-second resolution and a random suffix; `list`, `--latest`, drift and
    keep_last all order by id, so backups taken in the same second must still sort in the
    order they were taken."""
    from integrity.backups.create import create_backup

    settings = env.settings()
    created = [create_backup(settings).manifest.id for _ in range(3)]
    assert created == sorted(created) == env.repository().backup_ids()
    code, document = env.invoke_json("backup", "verify", "--latest")
    assert code == 0 and [r["backup_id"] for r in document["result"]["results"]] == created[-1:]


# ---------------------------------------------------------------- create proves its own output


def test_compression_proves_its_output_decompresses_to_what_was_read(tmp_path, monkeypatch):
    """compress_stream decompresses the bytes it writes as it writes them: a compressor whose
    output is not the input's (a fault of memory or of zstd) is refused, not kept."""
    import io

    import zstandard

    from integrity.backups import archive

    real_compressor = zstandard.ZstdCompressor

    class WrongCompressor:  # compresses other bytes than it read (python-zstandard's types are not subclassed)
        def __init__(self, **options):
            self.compressor = real_compressor(**options)

        def copy_stream(self, source, destination, **options):
            data = bytearray(source.read(1 << 20))
            data[len(data) // 2] ^= 0x01
            return self.compressor.copy_stream(io.BytesIO(bytes(data)), destination, **options)

    raw = os.urandom(200_000) * 3
    digest = archive.compress_stream(io.BytesIO(raw), tmp_path / "good.zst", level=3)
    assert (digest.raw_size, zstandard.ZstdDecompressor().decompress(
        (tmp_path / "good.zst").read_bytes(), max_output_size=len(raw))) == (len(raw), raw)
    monkeypatch.setattr(archive.zstandard, "ZstdCompressor", WrongCompressor)
    with pytest.raises(archive.CompressorOutputWrong, match="decompresses to other bytes than were read"):
        archive.compress_stream(io.BytesIO(raw), tmp_path / "wrong.zst", level=3)


def test_create_reads_its_file_back_from_disk_and_refuses_one_that_changed(env, monkeypatch):
    """The read-back hashes the data file as stored: a byte changed on disk after the
    capture wrote it fails the create (exit 5's BackupCorrupt) and leaves nothing visible."""
    from integrity.backups import create as create_module
    from integrity.backups.repository import BackupCorrupt

    real_check = create_module.check_stored

    def flip_then_check(path, entry, **options):
        with open(path, "r+b") as handle:
            handle.seek(entry.size // 2)
            byte = handle.read(1)
            handle.seek(entry.size // 2)
            handle.write(bytes([byte[0] ^ 0x01]))
        real_check(path, entry, **options)

    monkeypatch.setattr(create_module, "check_stored", flip_then_check)
    with pytest.raises(BackupCorrupt, match="does not match its SHA-256"):
        create_module.create_backup(env.settings())
    assert _visible_dirs(env) == [] and _leftovers(env) == []
