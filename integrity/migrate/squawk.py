"""squawk (the `squawk-cli` package) on the PostgreSQL SQL the static pass renders.

The static pass records each revision's upgrade through Alembic's offline mode for
PostgreSQL (integrity.migrate.static_pass); this module writes that SQL to one file per
revision, runs ONE squawk process over all the files (`--reporter json`), and folds its
violations into our findings: rule id `squawk:<squawk's rule>`, the revision that
rendered the statement, the table the statement names (so a revision's `ignore` and
`expect`, and the dry run's empty-table and engine filters, treat them like ours).

What we keep and what we take from squawk (the README says the same):
- Our rules stay where they know more than one file of SQL can: the PostgreSQL lock
  rules (pg-index-not-concurrent, pg-constraint-validated, pg-table-rewrite) know which
  tables the pending revisions created (empty, so harmless), which type changes are
  binary-coercible (no rewrite), and the dry run measures their locks on real data;
  the loss rules (drop-table, drop-column, rename-*, not-null-no-default) are
  engine-independent and know which columns are new. squawk's rules for the same
  hazards are excluded (`_COVERED_BY_OURS`), so a hazard is reported once.
- squawk's constraint rules catch what ours miss (a NOT VALID constraint validated in
  the same transaction, which keeps the strong lock for the scan): they are kept,
  except on a revision and table where our pg-constraint-validated already fired.
- Everything else squawk finds (DROP INDEX without CONCURRENTLY, a UNIQUE constraint
  built under ACCESS EXCLUSIVE, serial primary keys, ...) is a warning (an error where
  squawk itself says error). Its type-style advice (prefer bigint, text, timestamptz,
  identity) is excluded: it fires on every CREATE TABLE of the game's own schema, which
  chose its types deliberately, and changes nothing a migration does to data or locks.
- Rules that describe the offline rendering rather than the migration are excluded:
  the game's connect hook sets lock_timeout and statement_timeout on every PostgreSQL
  connection (squawk only sees the SQL), Alembic wraps each revision in a transaction
  (robust statements), and autocommit_block's COMMIT/BEGIN pair is the documented way to
  run CREATE INDEX CONCURRENTLY (transaction nesting, an uncommitted transaction).

Without the binary: one warning finding saying how to install it, never a crash.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from integrity.migrate.findings import Finding, Severity

PREFIX = "squawk:"
UNAVAILABLE = "squawk-unavailable"
INSTALL_HINT = "pip install 'typing-game-integrity[squawk]' (the squawk-cli package)"

# Our rule that covers the same hazard, better (see the module docstring).
_COVERED_BY_OURS = {
    "require-concurrent-index-creation": "pg-index-not-concurrent",
    "changing-column-type": "pg-table-rewrite",
    "adding-not-nullable-field": "pg-table-rewrite",
    "adding-required-field": "not-null-no-default",
    "ban-drop-column": "drop-column",
    "ban-drop-table": "drop-table",
    "renaming-column": "rename-column",
    "renaming-table": "rename-table",
}
# Rules about how offline SQL looks, not about what the migration does on a server.
_NOT_APPLICABLE = ("require-lock-timeout", "require-statement-timeout", "prefer-robust-stmts",
                   "transaction-nesting", "ban-uncommitted-transaction")
# Advice about type choices: not about what a migration does to data or availability.
_STYLE = ("prefer-bigint-over-int", "prefer-bigint-over-smallint", "prefer-identity", "prefer-text-field",
          "prefer-timestamptz", "ban-char-field")
EXCLUDED = tuple(sorted(set(_COVERED_BY_OURS) | set(_NOT_APPLICABLE) | set(_STYLE)))
# Kept unless our own rule fired on the same revision and table.
_DEDUPLICATED = {"constraint-missing-not-valid": "pg-constraint-validated",
                 "adding-foreign-key-constraint": "pg-constraint-validated"}


class SquawkFailed(RuntimeError):
    """squawk ran but did not produce a report (a crash, unreadable output)."""


def squawk_binary() -> str | None:
    """The squawk next to this Python (the venv's bin) first, then on PATH."""
    beside = Path(sys.executable).parent / "squawk"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("squawk")


@dataclass(frozen=True)
class SquawkRun:
    findings: dict[str, tuple[Finding, ...]]  # revision id -> its squawk findings
    seconds: float  # the one squawk process, wall clock
    files: int


def squawk_findings(revisions, *, our_findings=(), binary: str | None = None, target=None) -> SquawkRun:
    """Run squawk on each revision's PostgreSQL upgrade and downgrade SQL. `revisions` are the static
    pass's RevisionLint objects (id and `sql["postgresql"]`); `our_findings` are ours, for
    deduplication. A revision whose PostgreSQL rendering is empty is not sent. `target`
    reads the table and column a statement names (the static pass hands in its SQL reader;
    without it findings carry no table)."""
    # (revision, direction, statements): downgrades are checked with the same rules (a
    # rollback under load takes the same locks), their findings prefixed "downgrade:".
    scripts = [
        (lint.revision, direction, statements)
        for lint in revisions
        for direction, statements in (("upgrade", lint.sql.get("postgresql")),
                                      ("downgrade", getattr(lint, "downgrade_sql", {}).get("postgresql")))
        if statements
    ]
    with_sql = [lint for lint in revisions if lint.sql.get("postgresql") or getattr(lint, "downgrade_sql", {}).get("postgresql")]
    if not scripts:
        return SquawkRun({}, 0.0, 0)
    binary = binary if binary is not None else squawk_binary()
    first = with_sql[0].revision
    if binary is None:
        return _unavailable(first, f"squawk is not installed, so its PostgreSQL rules were not run; install it with {INSTALL_HINT}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="integrity-squawk-") as folder:
        files: dict[str, tuple[str, str, list[tuple[int, str]]]] = {}  # name -> (revision, direction, [(first line, statement)])
        for index, (revision, direction, statements) in enumerate(scripts):
            name = f"{index:04d}.{direction}.sql"
            files[name] = (revision, direction, _write(Path(folder) / name, statements))
        try:
            violations = _run(binary, folder, sorted(files))
        except SquawkFailed as exc:
            return _unavailable(first, f"{exc}; its PostgreSQL rules were not run (reinstall it with {INSTALL_HINT})")
    seconds = time.perf_counter() - started
    ours = {(f.revision, f.rule, f.table) for f in our_findings}
    # What each revision's upgrade creates (tables, indexes, types): its downgrade may drop
    # them, as our own downgrade rules allow, whatever squawk's drop rules say of a DROP.
    created = {lint.revision: _created_by(lint.sql.get("postgresql") or ()) for lint in revisions}
    found: dict[str, set[Finding]] = {}
    for violation in violations:
        name = Path(violation.get("file", "")).name
        if name not in files:
            continue
        revision, direction, statements = files[name]
        finding = _finding(violation, revision, statements, direction, target)
        if finding is None:
            continue
        if direction == "downgrade" and _undoes_the_upgrade(finding, _dropped_name(violation, statements),
                                                            created.get(revision, _Created())):
            continue
        covering = _DEDUPLICATED.get(violation.get("rule_name"))
        if covering and (revision, covering, finding.table) in ours:
            continue
        found.setdefault(revision, set()).add(finding)
    return SquawkRun({rev: tuple(sorted(f, key=Finding.key)) for rev, f in found.items()}, seconds, len(files))


def _unavailable(revision: str, message: str) -> SquawkRun:
    return SquawkRun({revision: (Finding(rule=UNAVAILABLE, severity=Severity.WARNING, revision=revision, message=message),)},
                     0.0, 0)


def _write(path: Path, statements) -> list[tuple[int, str]]:
    """One statement after another, each ending with `;`; returns each statement's first
    line (0-based, as squawk's JSON counts them)."""
    lines: list[str] = []
    starts = []
    for statement in statements:
        text = statement.rstrip().rstrip(";").rstrip() + ";"
        starts.append((len(lines), text))
        lines.extend(text.splitlines())
    path.write_text("\n".join(lines) + "\n")
    return starts


def _run(binary: str, folder: str, names: list[str]) -> list[dict]:
    command = [binary, "--reporter", "json", "--assume-in-transaction", *[f"--exclude={rule}" for rule in EXCLUDED], *names]
    try:
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SquawkFailed(f"{binary} could not run: {exc}") from None
    # squawk exits 1 when it found violations; its report is the JSON on stdout either way.
    tail = " ".join((done.stderr or done.stdout or "").split())[-200:]
    if done.returncode not in (0, 1) or (done.returncode == 1 and not done.stdout.strip()):
        raise SquawkFailed(f"{binary} exited {done.returncode} without a JSON report: {tail or 'no output'}")
    try:
        report = json.loads(done.stdout or "[]")
    except json.JSONDecodeError:
        raise SquawkFailed(f"{binary} exited {done.returncode} without a JSON report: {tail}") from None
    if not isinstance(report, list):
        raise SquawkFailed(f"{binary} wrote {type(report).__name__} instead of a list of violations")
    return report


def _finding(violation: dict, revision: str, statements: list[tuple[int, str]], direction: str = "upgrade",
             target=None) -> Finding | None:
    rule = violation.get("rule_name") or "unknown"
    if rule in EXCLUDED:
        return None
    line = int(violation.get("line") or 0)
    statement = next((text for start, text in reversed(statements) if start <= line), statements[0][1] if statements else "")
    table, column = _target(statement, target)
    severity = Severity.ERROR if str(violation.get("level", "")).lower() == "error" else Severity.WARNING
    message = " ".join(str(violation.get("message") or rule).split())
    hint = violation.get("help")
    if hint:
        message += f" Fix: {' '.join(str(hint).split())}"
    where = ("downgrade: " if direction == "downgrade" else "") + (f"{table}: " if table else "")
    return Finding(rule=PREFIX + rule, severity=severity, revision=revision,
                   message=f"{where}{message} [{_short(statement)}]", table=table, column=column, phase="static")


_CREATE = re.compile(r"^\s*CREATE\s+(?:UNIQUE\s+)?(TABLE|INDEX|TYPE)\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?"
                     r"([^\s(]+)(?:\s+ON\s+(?:ONLY\s+)?([^\s(]+))?", re.I)
_DROP = re.compile(r"^\s*DROP\s+(?:TABLE|INDEX|TYPE)\s+(?:CONCURRENTLY\s+)?(?:IF\s+EXISTS\s+)?([^\s;]+)", re.I)


@dataclass(frozen=True)
class _Created:
    """What a revision's upgrade creates, read from its PostgreSQL SQL."""

    tables: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    index_tables: tuple[tuple[str, str], ...] = ()  # (index, its table)


def _bare(name: str) -> str:
    """An identifier without its schema and quotes, lower case as PostgreSQL folds it."""
    last = name.rsplit(".", 1)[-1]
    return last[1:-1] if last.startswith('"') and last.endswith('"') else last.lower()


def _created_by(statements) -> _Created:
    tables, types, indexes = set(), set(), []
    for text in statements:
        match = _CREATE.match(text)
        if not match:
            continue
        kind, name, table = match.group(1).upper(), _bare(match.group(2)), match.group(3)
        if kind == "TABLE":
            tables.add(name)
        elif kind == "TYPE":
            types.add(name)
        elif table:
            indexes.append((name, _bare(table)))
    return _Created(frozenset(tables), frozenset(types), tuple(indexes))


def _dropped_name(violation: dict, statements: list[tuple[int, str]]) -> str | None:
    line = int(violation.get("line") or 0)
    statement = next((text for start, text in reversed(statements) if start <= line), "")
    match = _DROP.match(statement)
    return _bare(match.group(1)) if match else None


def _undoes_the_upgrade(finding: Finding, dropped: str | None, created: _Created) -> bool:
    """A downgrade statement on what its own upgrade created, on a table the upgrade created:
    no data was there before the upgrade and no reader waits on a table that did not exist
    (as our own downgrade rules judge it). An index the upgrade put on an older table is
    not: dropping it locks that table, and squawk says so."""
    new_tables = created.tables
    if finding.table in new_tables or dropped in new_tables or dropped in created.types:
        return True
    return any(index == dropped and table in new_tables for index, table in created.index_tables)


def _target(statement: str, target) -> tuple[str | None, str | None]:
    if target is None:
        return None, None
    try:
        return target(statement)
    except Exception:  # a statement the reader does not know: no table, still a finding
        return None, None


def _short(statement: str) -> str:
    text = " ".join(statement.split())
    return text if len(text) <= 100 else text[:97] + "..."
