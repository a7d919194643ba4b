"""Fault injection against the backup repository (issue 14 items 4-6; restic's habit: damage a
repository many ways, table-driven, and expect every reader to notice).

The world: four backups of one store, oldest first `pinned` (pinned for ever), `spare`,
`mid` and `victim` (the newest). Each backup damage breaks one or two of them in one way: a
stray or extra file, a symbolic link to a copy outside the repository, a manifest whose
hash was recomputed after a value was changed (its format, its id, its file names, its
dates, tables and files), directories swapped. Every reader then must:

- `backup list`: exit 0, the damaged backup marked CORRUPT with its problem, the others not;
- `backup show`: exit 5 and one `Error:` line for the damaged one, 0 for the others;
- `backup verify` (quick and deep): exit 5, the damaged one failed, the others ok;
- `restore ID --dry-run`, `drill --backup ID`: exit 5, one `Error:` line, nothing read
  from outside the backup's own directory;
- `restore latest`, `drill`: pick the newest undamaged backup;
- `prune`: exit 0, pins honoured, nothing outside the repository deleted.

Each journal damage (a torn line, a garbage line, a pin whose `until` is not a time, the
journal as a directory or a symlink to /dev/null, ...) is reported and skipped by readers,
later events still count, and retention refuses with exit 4 rather than guess.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from backup_helpers import BackupEnv, clone_backup, fill_database, one_error
from integrity.backups.repository import MANIFEST, MANIFEST_HASH, sha256_bytes

UTC = timezone.utc
PRUNE_POLICY = {
    "INTEGRITY_BACKUPS__RETENTION__KEEP_LAST": "1",
    "INTEGRITY_BACKUPS__RETENTION__KEEP_HOURLY": "0",
    "INTEGRITY_BACKUPS__RETENTION__KEEP_DAILY": "0",
    "INTEGRITY_BACKUPS__RETENTION__KEEP_WEEKLY": "0",
    "INTEGRITY_BACKUPS__RETENTION__KEEP_MONTHLY": "0",
}
ROLES = ("pinned", "spare", "mid", "victim")  # oldest first


@dataclass
class World:
    env: BackupEnv
    ids: dict[str, str]  # role -> backup id
    outside: Path  # a directory beside the repository, for copies that symlinks point at

    def dir(self, role: str) -> Path:
        return self.env.repo / self.ids[role]

    def data(self, role: str) -> Path:
        return self.dir(role) / self.env.repository().read_manifest(self.ids[role]).files[0].name

    @property
    def journal(self) -> Path:
        return self.env.repo / "journal.jsonl"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, sqlite_template) -> Path:
    """Built once: a small game database and a repository of four backups, one pinned."""
    from integrity.backups.catalog import pin
    from integrity.backups.create import create_backup

    root = tmp_path_factory.mktemp("pristine")
    shutil.copyfile(sqlite_template, root / "game.db")
    url = f"sqlite:///{root / 'game.db'}"
    fill_database(url, players=3, results_per_player=8, seed=14)
    env = BackupEnv(root, url)
    repository = env.repository()
    newest = create_backup(env.settings()).manifest.id
    now = datetime.now(UTC)
    ids = {role: clone_backup(repository, newest, now - timedelta(days=3 - index))
           for index, role in enumerate(ROLES[:-1])}
    ids["victim"] = newest
    pin(repository, ids["pinned"], until=None)
    (root / "ids.json").write_text(json.dumps(ids))
    return root


@pytest.fixture
def world(tmp_path, pristine) -> World:
    shutil.copyfile(pristine / "game.db", tmp_path / "game.db")
    shutil.copytree(pristine / "repo", tmp_path / "repo")
    outside = tmp_path / "outside"
    outside.mkdir()
    return World(BackupEnv(tmp_path, f"sqlite:///{tmp_path / 'game.db'}"),
                 json.loads((pristine / "ids.json").read_text()), outside)


# ---------------------------------------------------------------- backup damage, one function each


def rewrite_manifest(directory: Path, change: Callable[[dict], object]) -> None:
    """Change the manifest's JSON and recompute manifest.sha256: only validation catches it."""
    document = json.loads((directory / MANIFEST).read_bytes())
    change(document)
    write_manifest_json(directory, document)


def write_manifest_json(directory: Path, document) -> None:
    data = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
    (directory / MANIFEST).write_bytes(data)
    (directory / MANIFEST_HASH).write_text(f"{sha256_bytes(data)}  {MANIFEST}\n")


def _set(**values) -> Callable[[World], set[str]]:
    """Set top-level manifest fields of the victim (hash recomputed)."""
    def damage(w: World) -> set[str]:
        rewrite_manifest(w.dir("victim"), lambda d: d.update(values))
        return {"victim"}
    return damage


def _drop(key: str) -> Callable[[World], set[str]]:
    def damage(w: World) -> set[str]:
        rewrite_manifest(w.dir("victim"), lambda d: d.pop(key))
        return {"victim"}
    return damage


def _set_file(**values) -> Callable[[World], set[str]]:
    """Set fields of the victim's files[0] (hash recomputed)."""
    def damage(w: World) -> set[str]:
        rewrite_manifest(w.dir("victim"), lambda d: d["files"][0].update(values))
        return {"victim"}
    return damage


def _replace_document(value) -> Callable[[World], set[str]]:
    def damage(w: World) -> set[str]:
        write_manifest_json(w.dir("victim"), value)
        return {"victim"}
    return damage


def _stray_file(name: str) -> Callable[[World], set[str]]:
    def damage(w: World) -> set[str]:
        (w.dir("victim") / name).write_text("not part of the backup\n")
        return {"victim"}
    return damage


def _stray_directory(w: World) -> set[str]:
    (w.dir("victim") / "extra").mkdir()
    return {"victim"}


def _extra_zst(w: World) -> set[str]:
    shutil.copyfile(w.data("victim"), w.dir("victim") / "data2.db.zst")
    return {"victim"}


def _symlink_outside(which: str) -> Callable[[World], set[str]]:
    """Replace one of the victim's files by a symlink to an identical copy outside."""
    def damage(w: World) -> set[str]:
        path = w.data("victim") if which == "data" else w.dir("victim") / which
        copy = w.outside / path.name
        shutil.copyfile(path, copy)
        path.unlink()
        path.symlink_to(copy)
        return {"victim"}
    return damage


def _backup_dir_symlink_outside(w: World) -> set[str]:
    copy = w.outside / w.ids["victim"]
    shutil.copytree(w.dir("victim"), copy)
    shutil.rmtree(w.dir("victim"))
    w.dir("victim").symlink_to(copy, target_is_directory=True)
    return {"victim"}


def _backup_dir_symlink_to_neighbour(w: World) -> set[str]:
    shutil.rmtree(w.dir("victim"))
    w.dir("victim").symlink_to(w.dir("mid"), target_is_directory=True)
    return {"victim"}


def _backup_is_a_file(w: World) -> set[str]:
    shutil.rmtree(w.dir("victim"))
    w.dir("victim").write_text("not a backup\n")
    return {"victim"}


def _data_is_a_fifo(w: World) -> set[str]:
    data = w.data("victim")
    data.unlink()
    os.mkfifo(data)
    return {"victim"}


def _data_is_a_directory(w: World) -> set[str]:
    data = w.data("victim")
    data.unlink()
    data.mkdir()
    return {"victim"}


def _id_of_neighbour(w: World) -> set[str]:
    rewrite_manifest(w.dir("victim"), lambda d: d.update(id=w.ids["mid"]))
    return {"victim"}


def _directories_swapped(w: World) -> set[str]:
    parked = w.env.repo / "parked"
    w.dir("victim").rename(parked)
    w.dir("mid").rename(w.dir("victim"))
    parked.rename(w.dir("mid"))
    return {"mid", "victim"}


def _name_escapes(keep_own: bool) -> Callable[[World], set[str]]:
    """files[0].name = "../<mid>/data.db.zst": the same bytes, read from another backup."""
    def damage(w: World) -> set[str]:
        own = w.data("victim")
        rewrite_manifest(w.dir("victim"), lambda d: d["files"][0].update(name=f"../{w.ids['mid']}/{own.name}"))
        if not keep_own:
            own.unlink()
        return {"victim"}
    return damage


def _name_absolute(w: World) -> set[str]:
    target = str(w.data("mid"))
    w.data("victim").unlink()
    rewrite_manifest(w.dir("victim"), lambda d: d["files"][0].update(name=target))
    return {"victim"}


def _name_in_subdirectory(w: World) -> set[str]:
    own = w.data("victim")
    (w.dir("victim") / "sub").mkdir()
    own.rename(w.dir("victim") / "sub" / own.name)
    rewrite_manifest(w.dir("victim"), lambda d: d["files"][0].update(name=f"sub/{own.name}"))
    return {"victim"}


def _file_listed_twice(w: World) -> set[str]:
    rewrite_manifest(w.dir("victim"), lambda d: d.update(files=d["files"] * 2))
    return {"victim"}


def _hash_file(content: str) -> Callable[[World], set[str]]:
    def damage(w: World) -> set[str]:
        (w.dir("victim") / MANIFEST_HASH).write_text(content)
        return {"victim"}
    return damage


def _tables(value) -> Callable[[World], set[str]]:
    return _set(tables=value)


def _table_info(**info) -> Callable[[World], set[str]]:
    def damage(w: World) -> set[str]:
        rewrite_manifest(w.dir("victim"), lambda d: d["tables"]["players"].update(info))
        return {"victim"}
    return damage


def _table_info_drop(key: str) -> Callable[[World], set[str]]:
    def damage(w: World) -> set[str]:
        rewrite_manifest(w.dir("victim"), lambda d: d["tables"]["players"].pop(key))
        return {"victim"}
    return damage


BACKUP_DAMAGE: dict[str, Callable[[World], set[str]]] = {
    # item 6: a backup is exactly its listed regular files, inside its directory
    "stray-file": _stray_file("notes.txt"),
    "stray-hidden-file": _stray_file(".DS_Store"),
    "stray-directory": _stray_directory,
    "extra-zst": _extra_zst,
    "data-symlink-outside": _symlink_outside("data"),
    "manifest-symlink-outside": _symlink_outside(MANIFEST),
    "manifest-hash-symlink-outside": _symlink_outside(MANIFEST_HASH),
    "backup-dir-symlink-outside": _backup_dir_symlink_outside,
    "backup-dir-symlink-to-neighbour": _backup_dir_symlink_to_neighbour,
    "backup-is-a-file": _backup_is_a_file,
    "data-is-a-fifo": _data_is_a_fifo,
    "data-is-a-directory": _data_is_a_directory,
    # item 6: its own id, a known format, names inside its directory
    "format-999": _set(format=999),
    "format-0": _set(format=0),
    "format-text": _set(format="1"),
    "id-of-neighbour": _id_of_neighbour,
    "id-garbage": _set(id="../../etc"),
    "directories-swapped": _directories_swapped,
    "name-escapes-to-neighbour": _name_escapes(keep_own=False),
    "name-escapes-own-file-kept": _name_escapes(keep_own=True),
    "name-absolute": _name_absolute,
    "name-in-subdirectory": _name_in_subdirectory,
    "file-listed-twice": _file_listed_twice,
    # item 5: every manifest value is validated
    "created-at-garbage": _set(created_at="yesterday-ish"),
    "created-at-number": _set(created_at=1700000000),
    "created-at-null": _set(created_at=None),
    "created-at-naive": _set(created_at="2026-01-01T00:00:00"),
    "created-at-missing": _drop("created_at"),
    "tables-list": _tables([1, 2]),
    "tables-number": _tables(5),
    "table-info-number": _tables({"players": 5}),
    "table-rows-text": _table_info(rows="many"),
    "table-rows-negative": _table_info(rows=-1),
    "table-rows-bool": _table_info(rows=True),
    "table-aggregates-list": _table_info(aggregates=[1]),
    "table-aggregates-missing": _table_info_drop("aggregates"),
    "files-empty": _set(files=[]),
    "files-text": _set(files="data.db.zst"),
    "file-entry-number": _set(files=[7]),
    "file-size-text": _set_file(size="big"),
    "file-size-negative": _set_file(size=-5),
    "file-sha256-not-hex": _set_file(sha256="z" * 64),
    "file-kind-unknown": _set_file(kind="tarball"),
    "file-compression-gzip": _set_file(compression="gzip"),
    "file-entry-missing-hash": lambda w: (rewrite_manifest(w.dir("victim"), lambda d: d["files"][0].pop("raw_sha256")), {"victim"})[1],
    "engine-unknown": _set(engine="oracle"),
    "engine-null": _set(engine=None),
    "purpose-unknown": _set(purpose="party"),
    "suspect-reasons-text": _set(suspect_reasons="too small"),
    "label-number": _set(label=5),
    "identity-number": _set(source_identity=5),
    "revision-list": _set(revision=[]),
    "tool-number": _set(tool=5),
    "timings-text": _set(timings="fast"),
    "source-text": _set(source="somewhere"),
    "unknown-field": _set(owner="mallory"),
    "manifest-a-list": _replace_document([1, 2]),
    "manifest-null": _replace_document(None),
    "manifest-hash-empty": _hash_file(""),
    "manifest-hash-garbage": _hash_file("zzz  manifest.json\n"),
}
# The issue's own examples, and at least one of each class: the full battery of commands
# (deep verify, drill, restore and retention) runs on these; the rest get the readers'.
FULL_BATTERY = (
    "stray-file", "stray-directory", "extra-zst", "data-symlink-outside", "manifest-symlink-outside",
    "backup-dir-symlink-outside", "format-999", "id-of-neighbour", "directories-swapped",
    "name-escapes-to-neighbour", "created-at-garbage", "tables-list", "files-empty", "backup-is-a-file",
)


def _listing(env: BackupEnv) -> dict:
    code, document = env.invoke_json("backup", "list")
    assert code == 0, document
    return document["result"]


def _healthy_newest(w: World, damaged: set[str]) -> str:
    return next(w.ids[role] for role in reversed(ROLES) if role not in damaged)


def _outside_untouched(w: World, before: dict[str, bytes]) -> None:
    after = {str(p): p.read_bytes() for p in sorted(w.outside.rglob("*")) if p.is_file() and not p.is_symlink()}
    assert after == before


def _snapshot_outside(w: World) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(w.outside.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.mark.parametrize("kind", BACKUP_DAMAGE)
def test_a_damaged_backup_is_reported_and_the_others_keep_working(world, kind):
    w, env = world, world.env
    damaged = BACKUP_DAMAGE[kind](w)
    bad = {w.ids[role] for role in damaged}
    good = set(w.ids.values()) - bad

    listing = _listing(env)
    listed = {b["id"]: b for b in listing["backups"]}
    assert set(listed) == set(w.ids.values()), "a damaged backup is listed, never hidden"
    for backup_id in bad:
        assert "CORRUPT" in listed[backup_id]["states"] and listed[backup_id]["manifest_problem"], listed[backup_id]
    for backup_id in good:
        assert "CORRUPT" not in listed[backup_id]["states"] and listed[backup_id]["manifest_problem"] is None, listed[backup_id]
    assert "pinned" in listed[w.ids["pinned"]]["states"]

    for backup_id in bad:
        shown = env.invoke("backup", "show", backup_id)
        assert shown.returncode == 5, shown.output
        assert backup_id in one_error(shown)
    assert env.invoke("backup", "show", min(good)).returncode == 0

    code, document = env.invoke_json("backup", "verify", "--all")
    assert code == 5, document
    verdicts = {r["backup_id"]: r for r in document["result"]["results"]}
    assert {i for i, r in verdicts.items() if r["quick"] == "failed"} == bad, verdicts
    for backup_id in bad:
        assert backup_id in verdicts[backup_id]["problems"][0]


@pytest.mark.parametrize("kind", FULL_BATTERY)
def test_a_damaged_backup_is_never_restored_drilled_or_deep_verified_and_pins_hold(world, kind):
    w, env = world, world.env
    before = _snapshot_outside(w)
    damaged = BACKUP_DAMAGE[kind](w)
    before = before | _snapshot_outside(w)
    bad = {w.ids[role] for role in damaged}
    healthy = _healthy_newest(w, damaged)

    for backup_id in sorted(bad):
        refused = env.invoke("restore", backup_id, "--dry-run")
        assert refused.returncode == 5, refused.output
        assert backup_id in one_error(refused)
        deep = env.invoke_json("backup", "verify", "--deep", backup_id)
        assert deep[0] == 5 and deep[1]["result"]["results"][0]["deep"] is None, deep
        code, drilled = env.invoke_json("drill", "--backup", backup_id)
        assert code == 5, drilled
        assert backup_id in drilled["result"]["problems"][0], drilled  # failed at its hash check

    # The automatic choices take the newest undamaged backup.
    code, plan = env.invoke_json("restore", "latest", "--dry-run")
    assert code == 0 and plan["result"]["backup_id"] == healthy, plan
    code, drill = env.invoke_json("drill")
    # 3: the healthy backup is a day old, past the RPO; the drill itself passed
    assert code == 3 and drill["result"]["backup_id"] == healthy and drill["result"]["problems"] == [], drill

    code, pruned = env.invoke_json("backup", "prune", **PRUNE_POLICY)
    assert code == 0, pruned
    remaining = set(env.repository().backup_ids())
    assert w.ids["pinned"] in remaining and healthy in remaining, pruned
    assert "pinned" in {b["id"]: b for b in _listing(env)["backups"]}[w.ids["pinned"]]["states"]
    _outside_untouched(w, before)


def test_pruning_a_symlinked_backup_removes_the_link_never_what_it_points_at(world):
    """An older backup replaced by a symlink to a copy outside expires like any damaged one:
    the link goes, the copy it pointed at stays."""
    w, env = world, world.env
    copy = w.outside / w.ids["spare"]
    shutil.copytree(w.dir("spare"), copy)
    shutil.rmtree(w.dir("spare"))
    w.dir("spare").symlink_to(copy, target_is_directory=True)
    leftover = env.repo / ".tmp-20260101T000000Z-abcdef"
    leftover.symlink_to(w.outside, target_is_directory=True)
    before = _snapshot_outside(w)

    code, pruned = env.invoke_json("backup", "prune", **PRUNE_POLICY)
    assert code == 0, pruned
    assert w.ids["spare"] in pruned["result"]["deleted"], pruned
    assert not os.path.lexists(w.dir("spare")) and not os.path.lexists(leftover)
    assert w.ids["pinned"] in env.repository().backup_ids()
    _outside_untouched(w, before)
    assert (copy / MANIFEST).is_file()


# ---------------------------------------------------------------- journal damage


def _event_line(backup_id: str, event: str, detail, *, at: str | None = "2026-01-01T00:00:00.000000+00:00") -> bytes:
    document = {"backup_id": backup_id, "event": event, "detail": detail}
    if at is not None:
        document["at"] = at
    return (json.dumps(document) + "\n").encode()


def _append_raw(data: bytes) -> Callable[[World], None]:
    def damage(w: World) -> None:
        with w.journal.open("ab") as handle:
            handle.write(data)
    return damage


def _append_event(event: str, detail, **kwargs) -> Callable[[World], None]:
    return lambda w: _append_raw(_event_line(w.ids["spare"], event, detail, **kwargs))(w)


def _journal_replaced(make: Callable[[World], None]) -> Callable[[World], None]:
    def damage(w: World) -> None:
        w.journal.unlink()
        make(w)
    return damage


def _journal_symlink_outside(w: World) -> None:
    copy = w.outside / "journal.jsonl"
    shutil.copyfile(w.journal, copy)
    w.journal.unlink()
    w.journal.symlink_to(copy)


JOURNAL_DAMAGE: dict[str, Callable[[World], None]] = {
    "torn-last-line": _append_raw(b'{"at": "2026-01-01T00:00:00+00:00", "backup_id": "2026'),
    "garbage-line": _append_raw(b"this is not json\n"),
    "non-utf8-line": _append_raw(b"\xff\xfe\x00garbage\n"),
    "line-is-a-list": _append_raw(b"[1, 2]\n"),
    "line-is-a-number": _append_raw(b"42\n"),
    "line-is-null": _append_raw(b"null\n"),
    "pin-until-garbage": _append_event("pinned", {"until": "next tuesday"}),
    "pin-until-number": _append_event("pinned", {"until": 5}),
    "pin-until-naive": _append_event("pinned", {"until": "2099-01-01T00:00:00"}),
    "pin-detail-null": _append_event("pinned", None),
    "pin-detail-list": _append_event("pinned", ["forever"]),
    "unknown-event": _append_event("exploded", {}),
    "backup-id-not-an-id": lambda w: _append_raw(_event_line("../x", "pinned", {"until": None}))(w),
    "backup-id-number": lambda w: _append_raw(_event_line(7, "pinned", {"until": None}))(w),
    "at-garbage": _append_event("intact", {}, at="soon"),
    "at-missing": _append_event("intact", {}, at=None),
    "problems-not-a-list": _append_event("deep_failed", {"problems": 5}),
    "problem-a-number": _append_event("corrupt", {"problem": 5}),
    "reasons-text": _append_event("suspect", {"reasons": "too small"}),
    "extra-field": lambda w: _append_raw(b'{"at": "2026-01-01T00:00:00+00:00", "backup_id": "%s", "event": "intact", '
                                         b'"detail": {}, "by": "x"}\n' % w.ids["spare"].encode())(w),
    "journal-is-a-directory": _journal_replaced(lambda w: w.journal.mkdir()),
    "journal-symlink-to-dev-null": _journal_replaced(lambda w: w.journal.symlink_to("/dev/null")),
    "journal-symlink-outside": _journal_symlink_outside,
    "journal-missing": lambda w: w.journal.unlink(),
    "journal-emptied": lambda w: w.journal.write_bytes(b""),
}
# Appending to these would lose the event (a link elsewhere, /dev/null): every writer
# refuses with exit 4 until the journal is put back.
UNWRITABLE = {"journal-is-a-directory", "journal-symlink-to-dev-null", "journal-symlink-outside"}
# A journal gone or emptied while backups exist lost its pins: automatic events (a verify)
# must not start it again silently; a person re-pinning does, knowingly, and retention
# then runs on what they pinned.
LOST = {"journal-missing", "journal-emptied"}


@pytest.mark.parametrize("kind", JOURNAL_DAMAGE)
def test_a_damaged_journal_is_reported_and_retention_refuses_rather_than_guess(world, kind):
    w, env = world, world.env
    JOURNAL_DAMAGE[kind](w)
    writable = kind not in UNWRITABLE

    # Retention refuses rather than guess: a line it cannot read may have been a pin.
    for dry_run in (("--dry-run",), ()):
        refused = env.invoke("backup", "prune", *dry_run, **PRUNE_POLICY)
        assert refused.returncode == 4, refused.output
        assert "journal" in one_error(refused)
    assert set(env.repository().backup_ids()) == set(w.ids.values())

    # Readers report the damage and keep working: the backups are listed, shown and verified.
    listing = _listing(env)
    assert listing["journal_problems"], listing
    assert {b["id"] for b in listing["backups"]} == set(w.ids.values())
    shown = env.invoke("backup", "show", w.ids["mid"])
    assert shown.returncode == 0 and "journal: " in shown.stdout, shown.output

    verified = env.invoke("backup", "verify", "--all")
    if writable and kind not in LOST:
        assert verified.returncode == 0, verified.output
    else:  # its verdicts could not be recorded: say so before the work, exit 4
        assert verified.returncode == 4, verified.output
        assert "journal" in one_error(verified)

    # A pin made now is kept (never glued to a torn line); a writer that cannot journal refuses.
    pinned = env.invoke("backup", "pin", w.ids["spare"])
    if writable:
        assert pinned.returncode == 0, pinned.output
        assert "pinned" in {b["id"]: b for b in _listing(env)["backups"]}[w.ids["spare"]]["states"]
    else:
        assert pinned.returncode == 4 and "journal" in one_error(pinned), pinned.output
    if kind in LOST:
        assert env.invoke("backup", "prune", **PRUNE_POLICY).returncode == 0
        assert w.ids["spare"] in env.repository().backup_ids()
    else:
        assert env.invoke("backup", "prune", **PRUNE_POLICY).returncode == 4
        assert set(env.repository().backup_ids()) == set(w.ids.values())


def test_a_torn_line_never_swallows_the_pin_that_follows(world):
    """Item 4, the incident: a journal ending in a partial line, then `backup pin`; the pin
    used to be glued to the torn line and lost, and prune deleted the pinned backup."""
    w, env = world, world.env
    JOURNAL_DAMAGE["torn-last-line"](w)
    assert env.invoke("backup", "pin", w.ids["spare"]).returncode == 0
    lines = w.journal.read_bytes().split(b"\n")
    assert json.loads(lines[-2])["backup_id"] == w.ids["spare"], lines[-3:]
    listing = _listing(env)
    assert "pinned" in {b["id"]: b for b in listing["backups"]}[w.ids["spare"]]["states"]
    assert any("line" in problem for problem in listing["journal_problems"]), listing
    # Once the operator has looked at the torn line and removed it, retention runs and keeps the pin.
    w.journal.write_bytes(b"\n".join(line for line in lines if not line.startswith(b'{"at": "2026-01-01T00:00:00+00:00", "backup_id": "2026')))
    code, pruned = env.invoke_json("backup", "prune", **PRUNE_POLICY)
    assert code == 0, pruned
    assert {w.ids["pinned"], w.ids["spare"], w.ids["victim"]} <= set(env.repository().backup_ids())


def test_later_events_survive_a_bad_line(world):
    """A bad line is skipped, not the rest: a pin and a failure written after it still count."""
    w, env = world, world.env
    JOURNAL_DAMAGE["garbage-line"](w)
    JOURNAL_DAMAGE["pin-until-number"](w)
    env.repository().append(w.ids["mid"], "failed", {"problem": "planted by the test", "by": "test"})
    assert env.invoke("backup", "pin", w.ids["spare"], "--until", "30d").returncode == 0
    listing = _listing(env)
    states = {b["id"]: b["states"] for b in listing["backups"]}
    assert "pinned" in states[w.ids["spare"]] and "FAILED" in states[w.ids["mid"]]
    assert len(listing["journal_problems"]) == 2, listing["journal_problems"]
    code, plan = env.invoke_json("restore", "latest", "--dry-run")
    assert code == 0 and plan["result"]["backup_id"] == w.ids["victim"]


def test_a_pin_for_ever_is_a_null_until_and_is_not_damage(world):
    """`backup pin ID` without --until writes `until: null`: that is the format, not damage."""
    w, env = world, world.env
    _append_event("pinned", {"until": None})(w)
    listing = _listing(env)
    assert listing["journal_problems"] == []
    assert "pinned" in {b["id"]: b for b in listing["backups"]}[w.ids["spare"]]["states"]
    code, pruned = env.invoke_json("backup", "prune", **PRUNE_POLICY)
    assert code == 0 and w.ids["spare"] in env.repository().backup_ids(), pruned


def test_a_journal_that_is_a_fifo_never_hangs_a_reader(world):
    w, env = world, world.env
    w.journal.unlink()
    os.mkfifo(w.journal)
    completed = env.run("--json", "backup", "list", timeout=20)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["result"]["journal_problems"]
    refused = env.run("backup", "prune", timeout=20)
    assert refused.returncode == 4 and "journal" in one_error(refused)


# ---------------------------------------------------------------- PostgreSQL: the same checks on a dump


@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["stray-file", "data-symlink-outside", "format-999", "name-escapes-own-file-kept"])
def test_a_damaged_postgresql_backup_is_refused(tmp_path, filled_copy, kind):
    # A copy of a database filled once per session (the four kinds need the same data).
    pg_url = filled_copy("postgresql", players=3, results_per_player=5, seed=3)
    env = BackupEnv(tmp_path, pg_url)
    older = env.create()
    clone = clone_backup(env.repository(), older, datetime.now(UTC) + timedelta(seconds=5))
    outside = tmp_path / "outside"
    outside.mkdir()
    # The world's damage functions, on a repository of two: `mid` the older, `victim` the newer.
    w = World(env, {"pinned": older, "spare": older, "mid": older, "victim": clone}, outside)
    BACKUP_DAMAGE[kind](w)
    listed = {b["id"]: b for b in _listing(env)["backups"]}
    assert "CORRUPT" in listed[clone]["states"] and "CORRUPT" not in listed[older]["states"]
    code, document = env.invoke_json("backup", "verify", "--all")
    assert code == 5 and {r["backup_id"]: r["quick"] for r in document["result"]["results"]} == {older: "ok", clone: "failed"}
    refused = env.invoke("restore", clone, "--dry-run")
    assert refused.returncode == 5 and clone in one_error(refused)
    code, plan = env.invoke_json("restore", "latest", "--dry-run")
    assert code == 0 and plan["result"]["backup_id"] == older, plan
