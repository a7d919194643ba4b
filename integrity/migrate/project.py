"""An Alembic project as a dry run sees it: its configuration, its revision files, their
declared intent and the graph they form.

`MigrationProject.load()` reads our own history (game_core) or any project's
`alembic.ini` or `pyproject.toml` `[tool.alembic]`, so a developer can dry-run a revision
that exists only on a branch. Whatever is wrong with the project (a missing file, a
revision that does not import, two heads, a duplicate id, a snapshot at an unknown
revision) is a `MigrationProjectInvalid`: one line, exit 4, never a traceback.

The graph is read from the revision files themselves rather than from Alembic's
RevisionMap, which only warns about duplicate ids and dies with a KeyError on a missing
down_revision.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from game_core.errors import PreconditionFailed
from integrity.migrate.rules import RULES

CHANGES = ("update", "delete", "insert")
INTENT_KEYS = ("expect", "irreversible", "ignore")
EXPECT_KEYS = ("table", "column", "change", "max_rows", "reason")
IRREVERSIBLE_KEYS = ("loses", "reason")
IGNORE_KEYS = ("rule", "reason")
# Part of every sentinel URL, so a failure that quotes it is recognisably an env.py that
# ignored the connection it was handed.
SENTINEL_MARK = "integrity-migrate-sentinel"


class MigrationProjectInvalid(PreconditionFailed):
    """The Alembic project cannot be dry-run as it stands; the message names the fix."""


@dataclass(frozen=True)
class Expectation:
    table: str
    column: str | None
    change: str  # "update" | "delete" | "insert"
    max_rows: int | None
    reason: str


@dataclass(frozen=True)
class Irreversible:
    loses: tuple[str, ...]  # "table" or "table.column"
    reason: str


@dataclass(frozen=True)
class Ignore:
    rule: str
    reason: str


@dataclass(frozen=True)
class DeclaredIntent:
    expect: tuple[Expectation, ...] = ()
    irreversible: Irreversible | None = None
    ignore: tuple[Ignore, ...] = ()


@dataclass(frozen=True)
class RevisionInfo:
    id: str
    down_revisions: tuple[str, ...]
    path: Path
    sha256: str  # of the revision file's bytes
    message: str  # first line of the module docstring (or Alembic's doc)
    intent: DeclaredIntent
    module: Any = field(compare=False, repr=False)  # the loaded module (Alembic's Script.module)


@dataclass(frozen=True)
class _Source:
    """How to build a fresh Config: which file, and the path options made absolute."""

    kind: str  # "game_core" | "ini" | "toml"
    path: Path | None
    overrides: tuple[tuple[str, str], ...]


class MigrationProject:
    """A loaded Alembic project: a way to make Configs, and its revisions by id."""

    def __init__(self, description: str, source: _Source, revisions: list[RevisionInfo]):
        self.description = description  # "game_core" for ours, else the config file's path
        self._source = source
        self._files: list[RevisionInfo] = revisions  # every file, duplicates included
        self._by_id: dict[str, RevisionInfo] = {}
        for info in revisions:
            self._by_id.setdefault(info.id, info)

    # ------------------------------------------------------------ loading

    @classmethod
    def load(cls, config_path: Path | None) -> MigrationProject:
        """Load our history (None) or the project an alembic.ini / pyproject.toml describes."""
        if config_path is None:
            source = _Source("game_core", None, ())
            description = "game_core"
        else:
            path = Path(config_path).expanduser().absolute()
            source = _Source("toml" if path.suffix == ".toml" else "ini", path, ())
            description = str(path)
            _check_readable(path)
        # Read once as written, then build every later Config with its paths made absolute.
        config = _build_config(source, connection=None)
        overrides = _absolute_path_options(config, source)
        source = _Source(source.kind, source.path, overrides)
        config = _build_config(source, connection=None)
        return cls(description, source, _load_revision_files(config, description))

    def config(self, connection=None):
        """A fresh Alembic Config for this project, handing `connection` to env.py."""
        return _build_config(self._source, connection=connection)

    # ------------------------------------------------------------ the graph

    def revision(self, rev_id: str) -> RevisionInfo:
        try:
            return self._by_id[rev_id]
        except KeyError:
            raise MigrationProjectInvalid(
                f"revision {rev_id} is not in {self.description}'s history; "
                f"known revisions: {_listing(self._by_id)}"
            ) from None

    def head(self) -> str:
        self.check_graph()
        heads = self._heads()
        if not heads:
            raise MigrationProjectInvalid(
                f"{self.description} has no revisions; add one with `alembic revision` or point "
                "--alembic-config at the project that has them"
            )
        return heads[0]

    def check_graph(self) -> None:
        """Refuse duplicate ids, missing down_revisions, cycles and several heads."""
        seen: dict[str, Path] = {}
        for info in self._files:
            if info.id in seen:
                raise MigrationProjectInvalid(
                    f"revision {info.id} is defined twice, in {seen[info.id]} and {info.path}; "
                    "give one of them a new revision id (and fix the down_revision that points at it)"
                )
            seen[info.id] = info.path
        for info in self._files:
            for down in info.down_revisions:
                if down not in self._by_id:
                    raise MigrationProjectInvalid(
                        f"revision {info.id} ({info.path}) revises {down}, which is not in this "
                        "history; fix its down_revision or add the missing revision file"
                    )
        self._upgrade_order(set(self._by_id))  # raises on a cycle
        heads = self._heads()
        if len(heads) > 1:
            raise MigrationProjectInvalid(
                f"the history has {len(heads)} heads ({', '.join(heads)}); merge them with "
                "`alembic merge heads` so there is one revision to upgrade to"
            )

    def pending(self, start: str | None, target: str | None = None) -> list[RevisionInfo]:
        """The revisions an upgrade from `start` (exclusive; None is base) to `target`
        (inclusive; None or "head" is the single head) runs, in upgrade order."""
        self.check_graph()
        if start is not None and start not in self._by_id:
            raise MigrationProjectInvalid(
                f"the snapshot is at revision {start}, which is not in this history "
                f"({self.description}: {_listing(self._by_id)}); dry-run with the project that "
                "wrote it (--alembic-config), or restore a snapshot of this code's database"
            )
        if target is None or target == "head":
            target = self.head()
        if target not in self._by_id:
            raise MigrationProjectInvalid(
                f"--to {target} is not in this history ({self.description}: {_listing(self._by_id)}); "
                "give one of its revision ids"
            )
        if start == target:
            return []
        wanted = self._ancestors(target) | {target}
        if start is not None:
            if start not in wanted:
                where = "behind" if target in self._ancestors(start) else "on another branch than"
                raise MigrationProjectInvalid(
                    f"--to {target} is {where} the snapshot's revision {start}; a dry run only "
                    "upgrades: give a revision that comes after it"
                )
            wanted -= self._ancestors(start) | {start}
        return [self._by_id[rev_id] for rev_id in self._upgrade_order(wanted)]

    def _heads(self) -> list[str]:
        referenced = {down for info in self._by_id.values() for down in info.down_revisions}
        return sorted(rev_id for rev_id in self._by_id if rev_id not in referenced)

    def _ancestors(self, rev_id: str) -> set[str]:
        found: set[str] = set()
        stack = list(self._by_id[rev_id].down_revisions)
        while stack:
            current = stack.pop()
            if current not in found and current in self._by_id:
                found.add(current)
                stack.extend(self._by_id[current].down_revisions)
        return found

    def _upgrade_order(self, ids: set[str]) -> list[str]:
        """Parents before children; ties by id, so the order never depends on file listing."""
        waiting = {rev_id: {d for d in self._by_id[rev_id].down_revisions if d in ids} for rev_id in ids}
        order: list[str] = []
        while waiting:
            ready = sorted(rev_id for rev_id, downs in waiting.items() if not downs)
            if not ready:
                raise MigrationProjectInvalid(
                    f"revisions {', '.join(sorted(waiting))} revise each other in a cycle; "
                    "fix their down_revision"
                )
            for rev_id in ready:
                del waiting[rev_id]
                order.append(rev_id)
            for downs in waiting.values():
                downs.difference_update(ready)
        return order


def _listing(ids) -> str:
    names = sorted(ids)
    if not names:
        return "none"
    more = f" and {len(names) - 8} more" if len(names) > 8 else ""
    return ", ".join(names[:8]) + more


# ---------------------------------------------------------------- configuration


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise MigrationProjectInvalid(
            f"Alembic config {path} does not exist; point --alembic-config at an alembic.ini or "
            "a pyproject.toml with a [tool.alembic] section"
        )
    if path.is_dir():
        raise MigrationProjectInvalid(
            f"Alembic config {path} is a folder; point --alembic-config at the alembic.ini or "
            "pyproject.toml inside it"
        )
    try:
        path.read_bytes()
    except OSError as exc:
        raise MigrationProjectInvalid(
            f"cannot read Alembic config {path}: {exc.strerror or exc}; fix its permissions"
        ) from None


def _sentinel_url() -> str:
    # Safety: the dry run always hands env.py the copy's connection. An env.py that
    # ignores it would otherwise connect to the URL in the developer's alembic.ini, which
    # is often their real database. This URL names a file in a directory that does not
    # exist (SQLite never creates directories), so such an env.py fails to connect; one
    # that creates directories gets an empty throwaway database. Never the real one.
    folder = Path(tempfile.gettempdir()) / f"{SENTINEL_MARK}-{uuid.uuid4().hex}"
    return f"sqlite:///{folder / 'no-database-here.db'}"


def _build_config(source: _Source, *, connection):
    from alembic.config import Config

    if source.kind == "game_core":
        from game_core.migrations import alembic_config

        config = alembic_config()
    elif source.kind == "toml":
        config = Config(toml_file=str(source.path))
    else:
        config = Config(file_=str(source.path))
    try:
        for name, value in source.overrides:
            config.set_main_option(name, value.replace("%", "%%"))
        config.set_main_option("sqlalchemy.url", _sentinel_url().replace("%", "%%"))
    except Exception as exc:  # configparser and tomllib errors, alembic's CommandError
        raise MigrationProjectInvalid(
            f"cannot load Alembic config {source.path}: {_one_line(exc)}; fix the file"
        ) from None
    config.attributes["connection"] = connection
    return config


def _absolute_path_options(config, source: _Source) -> tuple[tuple[str, str], ...]:
    """script_location, version_locations and prepend_sys_path resolved against the config
    file's folder, so the project loads the same from any working directory."""
    where = source.path if source.path is not None else "game_core"
    try:
        script_location = config.get_alembic_option("script_location")
        versions = config.get_version_locations_list() or []
        sys_paths = config.get_prepend_sys_paths_list() or []
    except Exception as exc:  # configparser and tomllib errors, alembic's CommandError
        raise MigrationProjectInvalid(f"cannot load Alembic config {where}: {_one_line(exc)}; fix the file") from None
    if not script_location:
        raise MigrationProjectInvalid(
            f"Alembic config {where} has no script_location; set it (under [alembic] in an "
            "alembic.ini, [tool.alembic] in a pyproject.toml) to the folder holding env.py"
        )
    base = source.path.parent if source.path is not None else Path.cwd()
    overrides = [("script_location", _absolute(script_location, base))]
    if versions or sys_paths:
        # Lists go back as os.pathsep-separated text, so the separator must say so.
        overrides.append(("path_separator", "os"))
    if versions:
        overrides.append(("version_locations", os.pathsep.join(_absolute(v, base) for v in versions)))
    if sys_paths:
        overrides.append(("prepend_sys_path", os.pathsep.join(_absolute(p, base) for p in sys_paths)))
    return tuple(overrides)


def _absolute(location: str, base: Path) -> str:
    if ":" in location and not os.path.isabs(location):
        return location  # a "package:folder" resource location: Alembic resolves it
    path = Path(location).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


# ---------------------------------------------------------------- revision files


def _load_revision_files(config, where: str) -> list[RevisionInfo]:
    from alembic.script import Script, ScriptDirectory

    try:
        script_dir = ScriptDirectory.from_config(config)
    except Exception as exc:  # alembic's CommandError ("Path doesn't exist: ...")
        raise MigrationProjectInvalid(
            f"the script_location of {where} cannot be used: {_one_line(exc)}; point it at the "
            "folder holding env.py"
        ) from None
    if not (Path(script_dir.dir) / "env.py").is_file():
        raise MigrationProjectInvalid(
            f"{script_dir.dir} (script_location of {where}) has no env.py; point script_location "
            "at the folder `alembic init` created"
        )
    revisions: list[RevisionInfo] = []
    seen: set[Path] = set()
    for location in script_dir._version_locations:  # Alembic's resolved version folders
        if not location.is_dir():
            raise MigrationProjectInvalid(
                f"version location {location} (from {where}) does not exist; create it or fix "
                "version_locations"
            )
        # Alembic's own loop (ScriptDirectory._load_revisions), file by file, so that a
        # file that fails to import is named instead of ending in a traceback.
        for path in Script._list_py_dir(script_dir, location):
            real = path.resolve()
            if real in seen:
                continue  # the same file reached through two locations: not a duplicate
            seen.add(real)
            try:
                script = Script._from_path(script_dir, real)
            except Exception as exc:  # SyntaxError, ImportError, anything the module body raises
                raise MigrationProjectInvalid(
                    f"revision file {real} does not load: {_one_line(exc)}; fix it or move it out "
                    f"of {location}"
                ) from None
            if script is not None:
                revisions.append(_revision_info(script, real))
    return revisions


def _revision_info(script, path: Path) -> RevisionInfo:
    down = script.down_revision
    downs = () if down is None else (down,) if isinstance(down, str) else tuple(down)
    doc = (script.module.__doc__ or "").strip()
    message = doc.splitlines()[0].strip() if doc else (script.doc or "").strip()
    return RevisionInfo(
        id=script.revision,
        down_revisions=downs,
        path=path,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        message=message,
        intent=parse_intent(getattr(script.module, "integrity", None), path),
        module=script.module,
    )


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} (line {exc.lineno})"
    # Without object addresses ("at 0x7f..."), so reports stay the same from run to run.
    text = " ".join(re.sub(r" at 0x[0-9a-fA-F]+", "", str(exc)).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------- declared intent


def parse_intent(raw: Any, path: Path) -> DeclaredIntent:
    """Validate a revision module's `integrity = {...}` declaration."""
    if raw is None:
        return DeclaredIntent()
    where = f"{path}: integrity"
    if not isinstance(raw, dict):
        _bad(f"{where} must be a dict with the keys {', '.join(INTENT_KEYS)}")
    _known_keys(raw, INTENT_KEYS, where)
    expect = tuple(_expectation(item, f"{where}['expect'][{i}]") for i, item in enumerate(_items(raw, "expect", where)))
    ignore = tuple(_ignore(item, f"{where}['ignore'][{i}]") for i, item in enumerate(_items(raw, "ignore", where)))
    irreversible = None
    if raw.get("irreversible") is not None:
        irreversible = _irreversible(raw["irreversible"], f"{where}['irreversible']")
    return DeclaredIntent(expect=expect, irreversible=irreversible, ignore=ignore)


def _bad(message: str):
    raise MigrationProjectInvalid(message)


def _known_keys(entry: dict, allowed: tuple[str, ...], where: str) -> None:
    for key in entry:
        if key not in allowed:
            _bad(f"{where} has unknown key {key!r}; allowed: {', '.join(allowed)}")


def _items(raw: dict, key: str, where: str) -> list:
    value = raw.get(key) or []
    if not isinstance(value, (list, tuple)):
        _bad(f"{where}['{key}'] must be a list of dicts")
    return list(value)


def _entry(item: Any, allowed: tuple[str, ...], where: str) -> dict:
    if not isinstance(item, dict):
        _bad(f"{where} must be a dict with the keys {', '.join(allowed)}")
    _known_keys(item, allowed, where)
    return item


def _text(entry: dict, key: str, where: str, *, required: bool = True) -> str | None:
    value = entry.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        _bad(f"{where} needs a non-empty {key!r} (a string)")
    return value.strip()


def _expectation(item: Any, where: str) -> Expectation:
    entry = _entry(item, EXPECT_KEYS, where)
    change = entry.get("change")
    if change not in CHANGES:
        _bad(f"{where} has change {change!r}; use one of {', '.join(CHANGES)}")
    max_rows = entry.get("max_rows")
    if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 0):
        _bad(f"{where} has max_rows {max_rows!r}; give a whole number of rows, 0 or more")
    return Expectation(
        table=_text(entry, "table", where),
        column=_text(entry, "column", where, required=False),
        change=change,
        max_rows=max_rows,
        reason=_text(entry, "reason", where),
    )


def _irreversible(item: Any, where: str) -> Irreversible:
    entry = _entry(item, IRREVERSIBLE_KEYS, where)
    loses = entry.get("loses")
    if not isinstance(loses, (list, tuple)) or not loses:
        _bad(f"{where}['loses'] must list what the revision loses, as \"table\" or \"table.column\"")
    for name in loses:
        parts = name.split(".") if isinstance(name, str) else []
        if not 1 <= len(parts) <= 2 or not all(part.strip() for part in parts):
            _bad(f"{where}['loses'] has {name!r}; write \"table\" or \"table.column\"")
    return Irreversible(loses=tuple(name.strip() for name in loses), reason=_text(entry, "reason", where))


def _ignore(item: Any, where: str) -> Ignore:
    entry = _entry(item, IGNORE_KEYS, where)
    rule = entry.get("rule")
    if rule not in RULES and not (isinstance(rule, str) and re.fullmatch(r"squawk:[a-z0-9-]+", rule)):  # squawk's ids are its own
        _bad(f"{where} names rule {rule!r}, which does not exist; see `integrity migrate rules`")
    return Ignore(rule=rule, reason=_text(entry, "reason", where))
