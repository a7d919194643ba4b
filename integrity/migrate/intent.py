"""Declared intent: what a revision says it means to do, held against what it did.

A revision module may carry
    integrity = {"expect": [...], "irreversible": {...}, "ignore": [...]}
(validated by integrity.migrate.project). Findings it covers are kept in the report but
marked `declared` (or `ignored_by`), so they no longer fail the run:

- `expect` covers data changes of its kind on its table (and column): update ->
  values-changed, delete -> rows-lost and cascade-rows-lost, insert -> rows-added; and
  the static warnings about the same table and column. Beyond `max_rows` the finding
  becomes `declared-change-exceeded`, an error.
- `irreversible` covers the loss of what it lists under `loses` ("table" or
  "table.column") and the failed or lossy round trip of that revision.
- `ignore` silences one rule for that revision, with its reason.
Entries that covered nothing are reported (`unused-declaration`): a stale declaration
would otherwise cover the next real change silently.
"""

from __future__ import annotations

from dataclasses import replace

from integrity.migrate.findings import Finding, Severity
from integrity.migrate.project import DeclaredIntent, RevisionInfo
from integrity.migrate.rules import RULES

_CHANGE_RULES = {
    "update": {"values-changed", "type-narrowing", "type-meaning-change", "unbounded-data-change"},
    "delete": {"rows-lost", "cascade-rows-lost", "unbounded-data-change"},
    "insert": {"rows-added"},
}
# Only data findings carry measured rows: max_rows applies to them, not to static guesses.
_MEASURED = {"values-changed", "rows-lost", "cascade-rows-lost", "rows-added"}
_LOSS_RULES = {"drop-table", "drop-column", "column-values-lost", "rows-lost", "drop-add-rename"}
_ROUND_TRIP_RULES = {"round-trip-lossy", "round-trip-failed", "empty-downgrade"}


def apply_intent(findings: list[Finding], revisions: list[RevisionInfo], *, data_pass: bool) -> list[Finding]:
    """The findings with declared and ignored ones marked, exceeded expectations turned
    into errors, and unused declarations reported (only after a data pass: a lint cannot
    know whether an `expect` will match)."""
    intents = {revision.id: revision.intent for revision in revisions}
    used: set[tuple[str, str, int]] = set()
    result = []
    for finding in findings:
        intent = intents.get(finding.revision) if finding.revision else None
        if intent is None:
            result.append(finding)
            continue
        result.append(_judge(finding, finding.revision, intent, used))
    if data_pass:
        result.extend(_unused(revisions, used))
    return result


def _judge(finding: Finding, revision: str, intent: DeclaredIntent, used: set) -> Finding:
    for index, ignore in enumerate(intent.ignore):
        if ignore.rule == finding.rule:
            used.add((revision, "ignore", index))
            return replace(finding, ignored_by=ignore.reason)
    for index, expectation in enumerate(intent.expect):
        if finding.rule not in _CHANGE_RULES[expectation.change] or finding.table != expectation.table:
            continue
        if expectation.column and finding.column and finding.column != expectation.column:
            continue
        used.add((revision, "expect", index))
        if finding.rule in _MEASURED and expectation.max_rows is not None and (finding.rows or 0) > expectation.max_rows:
            return replace(
                finding,
                rule="declared-change-exceeded",
                severity=RULES["declared-change-exceeded"].severity,
                message=f"{finding.message}; declared at most {expectation.max_rows:,} rows ({expectation.reason})",
                phase="intent",
            )
        return replace(finding, declared=True)
    if intent.irreversible is not None:
        if finding.rule in _ROUND_TRIP_RULES:
            used.add((revision, "irreversible", 0))
            return replace(finding, declared=True)
        if finding.rule in _LOSS_RULES and _listed(finding, intent.irreversible.loses):
            used.add((revision, "irreversible", 0))
            return replace(finding, declared=True)
    return finding


def _listed(finding: Finding, loses: tuple[str, ...]) -> bool:
    if finding.table is None:
        return False
    return finding.table in loses or (finding.column is not None and f"{finding.table}.{finding.column}" in loses)


def _unused(revisions: list[RevisionInfo], used: set) -> list[Finding]:
    unused = []
    for revision in revisions:
        entries = [("expect", i, f"expect {e.change} of {e.table}{'.' + e.column if e.column else ''}") for i, e in enumerate(revision.intent.expect)]
        entries += [("ignore", i, f"ignore {g.rule}") for i, g in enumerate(revision.intent.ignore)]
        for kind, index, text in entries:
            if (revision.id, kind, index) not in used:
                unused.append(Finding(
                    rule="unused-declaration", severity=Severity.WARNING, revision=revision.id,
                    message=f"the declaration `{text}` matched nothing in this dry run", phase="intent",
                ))
    return unused
