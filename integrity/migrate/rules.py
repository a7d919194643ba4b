"""The rule catalogue: stable ids, severity, what it means and how to fix it.

`integrity migrate rules` lists it; every finding names one of these ids, and a
revision's declared intent may `ignore` one with a reason. Ids never change meaning;
a retired rule keeps its id out of reuse.
"""

from __future__ import annotations

from dataclasses import dataclass

from integrity.migrate.findings import Severity


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    phase: str  # static: read from the revision's operations; data: measured on the copy
    title: str
    hint: str


E, W, I = Severity.ERROR, Severity.WARNING, Severity.INFO

RULES: dict[str, Rule] = {rule.id: rule for rule in (
    # ---- static: the revision's operations, recorded through Alembic's offline mode
    Rule("drop-table", E, "static", "a table is dropped: its rows are lost",
          "keep the table until nothing reads it, or declare the loss under `irreversible`"),
    Rule("drop-column", E, "static", "a column is dropped: its values are lost",
          "copy the values elsewhere first, or declare the loss under `irreversible`"),
    Rule("rename-table", W, "static", "a table is renamed: code reading the old name breaks",
          "deploy code that reads both names first, or create a view under the old name"),
    Rule("rename-column", W, "static", "a column is renamed: code reading the old name breaks",
          "add the new column, copy, and drop the old one in a later release"),
    Rule("drop-add-rename", E, "static", "a column is dropped and another added in one table: probably a rename that loses every value",
          "use alter_column(new_column_name=...) or copy the values before dropping"),
    Rule("type-narrowing", E, "static", "a column type narrows (float or numeric to integer, fewer decimals, shorter strings, smaller integers)",
          "check the longest or most precise stored value, or keep the wider type"),
    Rule("type-meaning-change", E, "static", "a column type changes what values mean (number to text, text to number or date, timezone changes)",
          "add a new column with the new type, convert explicitly, and compare"),
    Rule("not-null-no-default", W, "static", "a column becomes NOT NULL (or is added NOT NULL) without a default: fails on a populated table",
          "add it nullable, backfill, then set NOT NULL; or give it a server_default"),
    Rule("unbounded-data-change", E, "static", "an UPDATE or DELETE without a WHERE clause rewrites or removes every row",
          "add a WHERE clause naming the rows, and declare the change under `expect` with max_rows"),
    Rule("empty-downgrade", W, "static", "the downgrade does nothing or raises: the revision cannot be rolled back",
          "write the downgrade, or declare the revision `irreversible` with what it loses"),
    Rule("enum-not-dropped", E, "static", "an enum type created by the upgrade is not dropped by the downgrade: the next upgrade fails",
          "drop the type in the downgrade (sa.Enum(...).drop(op.get_bind()) or DROP TYPE)"),
    Rule("batch-rebuild-cascade", E, "static", "a SQLite batch rebuild of a table referenced with ON DELETE CASCADE deletes the child rows (upgrade or downgrade)",
          "run PRAGMA foreign_keys=OFF in op.get_context().autocommit_block() before the batch and ON (then PRAGMA foreign_key_check) after it, or rebuild the children too"),
    # The three PostgreSQL lock rules are warnings without data; a dry run measures the
    # hold on the copy: an error over [migrate] lock_budget, info within it.
    Rule("pg-index-not-concurrent", W, "static", "an index is built without CONCURRENTLY: writes to the table wait for the whole build (a dry run measures how long: an error over the lock budget)",
          "use postgresql_concurrently=True inside an autocommit_block()"),
    Rule("pg-constraint-validated", W, "static", "a foreign key or check constraint is added and validated in one step under a strong lock (a dry run measures how long: an error over the lock budget)",
          "add it NOT VALID (postgresql_not_valid=True), then VALIDATE CONSTRAINT in a later step"),
    Rule("pg-table-rewrite", W, "static", "the statement rewrites or scans the whole table under ACCESS EXCLUSIVE (type change, SET NOT NULL, volatile default; a dry run measures how long: an error over the lock budget)",
          "expand and contract: add a new column, backfill in batches, switch over"),
    Rule("needs-data-pass", I, "static", "offline mode cannot render this revision (it reads the database or uses batch operations)",
          "run `integrity migrate dry-run`: the data pass runs it on a copy"),
    Rule("squawk-unavailable", W, "static", "squawk (PostgreSQL rules, reported as squawk:<rule>) is not installed or could not run",
          "install it: pip install 'typing-game-integrity[squawk]' (the squawk-cli package)"),
    # ---- data: measured on the snapshot copy
    Rule("migration-failed", E, "data", "the revision failed on the copy of real data",
          "fix the rows it names, or make the revision handle them; it would fail in production the same way"),
    Rule("rows-lost", E, "data", "rows present before the revision are gone after it",
          "keep the rows, or declare the change under `expect` (change: delete, max_rows)"),
    Rule("cascade-rows-lost", E, "data", "rows of a table the revision does not name were deleted through a foreign key cascade",
          "rebuild without cascading deletes (SQLite batch: foreign_keys=OFF), or declare it"),
    Rule("values-changed", E, "data", "stored values changed (precision lost, truncated, became NULL, another storage class, another sort order, or rewritten)",
          "convert explicitly into a new column, or declare the change under `expect` (change: update, max_rows)"),
    Rule("column-values-lost", E, "data", "a dropped column held values that no other column keeps",
          "copy the values first, or declare the column under `irreversible.loses`"),
    Rule("rows-added", I, "data", "rows were inserted by the revision",
          "declare them under `expect` (change: insert) to document the intent"),
    Rule("new-audit-failures", E, "data", "the game's audits fail on rows that passed them before the revision",
          "see `integrity audit` on the kept copy (--keep-copy) for the rows and rules"),
    Rule("round-trip-lossy", E, "data", "downgrading and upgrading again does not return the same schema and content",
          "make the downgrade restore what the upgrade changed, or declare the revision `irreversible`"),
    Rule("round-trip-failed", E, "data", "the downgrade or the second upgrade raised on the copy",
          "fix the downgrade, or declare the revision `irreversible`"),
    Rule("declared-change-exceeded", E, "data", "a declared change touched more rows than its max_rows, or another kind of change than declared",
          "check the revision's WHERE clause, or raise max_rows with a reason"),
    Rule("unused-declaration", W, "data", "an `expect` or `ignore` entry of the revision matched nothing",
          "remove it, so the next real change is not silently covered"),
    Rule("table-rewritten", W, "data", "PostgreSQL rewrote a populated table or index (its relfilenode changed)",
          "expect downtime proportional to the table's size; consider expand and contract"),
    Rule("long-exclusive-lock", W, "data", "an ACCESS EXCLUSIVE lock on a populated table was held until commit for longer than the lock budget",
          "split the revision, or take the lock last; reads and writes of the table wait meanwhile"),
)}


@dataclass(frozen=True)
class RulesListing:
    """`integrity migrate rules`: the catalogue, static rules first."""

    rules: tuple[Rule, ...]

    def summary(self) -> dict:
        return {"rules": len(self.rules)}


def rules_listing() -> RulesListing:
    return RulesListing(tuple(sorted(RULES.values(), key=lambda r: (r.phase != "static", r.id))))
