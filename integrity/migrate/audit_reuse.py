"""The audit rules whose result a migration cannot have changed, so that the dry run's
audit of the migrated copy runs only the others.

A rule's failing rows depend only on the rows of the tables it reads, on the columns it
reads of them (`Rule.reads`, by which the audits also skip a rule whose columns are
missing) and on `now`, the same for both audits. On SQLite, a table whose pages hold the
same bytes as before the migration (`integrity.migrate.pages`) holds the same values in
every column it had, and they compare as before when those columns are declared as
before: the only statement changes allowed are ADD COLUMN's (it rewrites no row and
inserts the new columns' definitions after the last column) and indexes. A rule that
reads only such tables, and none of their new columns, finds what it found before.
Anything else (pages that changed, a column renamed, dropped or retyped, a key, check or
foreign key changed, a table gone or new; PostgreSQL, which has no page digests) runs
the rule again.

On the 1 GB benchmark database a safe revision (a nullable column on `players`) leaves
every rule's result as it was: the audit of the migrated copy (43.5 s in the README's
figures before this) runs no rule; the phase takes 2.2 s, the page digests.
"""

from __future__ import annotations

from collections.abc import Iterable

from integrity.migrate.pages import TablePages

# Schema changes that leave every stored value, and how it compares, as it was.
_VALUE_KEEPING = frozenset({"column_added", "index_added", "index_dropped"})


def tables_keeping_values(before: dict[str, TablePages], after: dict[str, TablePages],
                          changes) -> dict[str, frozenset[str]]:
    """{table: the columns added to it} for every table whose existing columns hold and
    declare what they did before. `changes` are observe.schema_changes between the two."""
    changes_of: dict[str, list] = {}
    for change in changes:
        changes_of.setdefault(change.table, []).append(change)
    kept = {}
    for table, old in before.items():
        new = after.get(table)
        if new is None or not old.same_bytes(new):
            continue
        table_changes = changes_of.get(table, [])
        if any(change.kind not in _VALUE_KEEPING for change in table_changes):
            continue
        added = frozenset(change.column for change in table_changes if change.kind == "column_added")
        if new.sql != old.sql and not (added and only_columns_inserted(old.sql, new.sql)):
            continue  # the statement changed otherwise (a collation, say): its values may compare anew
        kept[table] = added
    return kept


def only_columns_inserted(before: str, after: str) -> bool:
    """`after` is `before` with one run of text inserted, beginning with a comma, at a
    place where `before` goes on with a comma or the closing parenthesis: what SQLite's
    ALTER TABLE ADD COLUMN writes (`..., name TEXT, country VARCHAR(2),\\n CONSTRAINT ...`),
    never text inside an existing column's definition."""
    inserted = len(after) - len(before)
    if inserted <= 0:
        return False
    for place in range(len(before) + 1):
        if after[:place] != before[:place]:
            break
        text = after[place:place + inserted]
        rest = before[place:]
        if text.startswith(",") and after[place + inserted:] == rest and rest.lstrip()[:1] in (",", ")"):
            return True
    return False


def reusable_rules(rules: Iterable, kept: dict[str, frozenset[str]]) -> set[str]:
    """The ids of `rules` that read only tables in `kept` and none of their new columns."""
    return {
        rule.id for rule in rules
        if rule.reads and all(table in kept and not set(columns) & kept[table] for table, columns in rule.reads)
    }
