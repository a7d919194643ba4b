"""The catalogue: every rule the audits run, in report order.

Three sources, one order (per table: players, results, progress, personal_bests):

- `schema.<table>`: the table and the columns the catalogue reads exist with the declared
  types (schema drift is a finding, not a crash);
- row rules, compiled from `checks/catalogue_spec.py`, which `python -m checks.export`
  generates from the Pandera contracts (`checks.contracts`, the source of truth);
- cross-table rules (`checks.cross_rules`), SQL in both engines.

Nothing here imports pandas or pandera.
"""

from __future__ import annotations

from checks import catalogue_spec
from checks.compile_sql import compile_checks
from checks.cross_rules import CROSS_RULES
from checks.model import ERROR, Rule, RowRule, SchemaRule
from game_core.errors import InvalidInput

TABLES: tuple[str, ...] = tuple(catalogue_spec.TABLES)
TABLE_KEYS: dict[str, tuple[str, ...]] = {name: tuple(spec["key"]) for name, spec in catalogue_spec.TABLES.items()}
# Tables whose rows carry an increasing integer id: the ones `since` watermarks apply to.
WATERMARK_TABLES = tuple(name for name, key in TABLE_KEYS.items() if key == ("id",))

SCHEMA_FIX = (
    "compare with `integrity migrate dry-run`: an unreviewed migration or a partial restore changed the "
    "schema; restore the newest clean backup or apply the missing revision"
)


def _row_rule(entry: dict) -> RowRule:
    return RowRule(
        entry["id"],
        entry["table"],
        entry["severity"],
        entry["meaning"],
        entry["action"],
        predicate=compile_checks(entry["checks"]),
        columns=tuple(entry["columns"]),
        reads=((entry["table"], tuple(entry["columns"])),),
    )


def _schema_rule(table: str) -> SchemaRule:
    columns = tuple(catalogue_spec.TABLES[table]["columns"])
    return SchemaRule(
        f"schema.{table}",
        table,
        ERROR,
        f"the table {table} or a column the audits read is missing, or has another type or nullability",
        SCHEMA_FIX,
        reads=((table, columns),),
    )


def _build() -> tuple[Rule, ...]:
    row_rules = [_row_rule(entry) for entry in catalogue_spec.ROW_RULES]
    ordered: list[Rule] = []
    for table in TABLES:
        ordered.append(_schema_rule(table))
        ordered.extend(rule for rule in row_rules if rule.table == table)
        ordered.extend(rule for rule in CROSS_RULES if rule.table == table)
    return tuple(ordered)


RULES: tuple[Rule, ...] = _build()


def catalogue() -> tuple[Rule, ...]:
    """Every rule, in its stable report order."""
    return RULES


def _index(rules: tuple[Rule, ...]) -> dict[str, Rule]:
    by_id: dict[str, Rule] = {}
    for rule in rules:
        if rule.id in by_id:
            raise ValueError(f"duplicate rule id {rule.id!r} in the catalogue")
        by_id[rule.id] = rule
    return by_id


RULES_BY_ID: dict[str, Rule] = _index(RULES)


class UnknownRule(InvalidInput):
    """A rule id that is not in the catalogue."""


class UnknownTable(InvalidInput):
    """A table name that no rule of the catalogue audits."""


def check_tables(tables) -> tuple[str, ...]:
    """The table names, each known (UnknownTable lists the known ones)."""
    if isinstance(tables, str):
        tables = (tables,)
    chosen = []
    for table in tables:
        if table not in TABLES:
            raise UnknownTable(f"unknown audit table {table!r}; tables: {', '.join(TABLES)}")
        if table not in chosen:
            chosen.append(table)
    return tuple(chosen)


def select_rules(selection=None, tables=None) -> tuple[Rule, ...]:
    """The rules to run: the whole catalogue, or the given rules and ids, in that order,
    narrowed to the rules of `tables` when given.

    Ids are looked up in the catalogue; rule objects are taken as they are (a caller may
    run rules of its own). Repeats run once.
    """
    table_filter = None if tables is None else check_tables(tables)
    if selection is None:
        chosen_rules = RULES
    else:
        if isinstance(selection, (str, Rule)):
            selection = (selection,)
        chosen: dict[str, Rule] = {}
        for item in selection:
            if isinstance(item, str):
                if item not in RULES_BY_ID:
                    raise UnknownRule(f"unknown audit rule {item!r}; known rules: {', '.join(RULES_BY_ID)}")
                item = RULES_BY_ID[item]
            elif not isinstance(item, Rule):
                raise TypeError(f"expected a rule or a rule id, got {item!r}")
            chosen.setdefault(item.id, item)
        chosen_rules = tuple(chosen.values())
    if table_filter is not None:
        chosen_rules = tuple(rule for rule in chosen_rules if rule.table in table_filter)
    return chosen_rules
