"""Who may do what inside a restored PostgreSQL database: live's owners and grants
copied onto the staging database before the swap.

pg_restore runs with --no-owner --no-privileges (integrity.db.scratch), because a scratch
copy or a drill may land where the archive's roles do not exist. A restore into live's
own server must not hand the game a database it can no longer use, though: the role that
could INSERT into `results` before the restore must still be able to after it (or every
game write fails), and the next migration's ALTER TABLE must still find its owner. The
swap copies the database's own owner, settings and grants
(`postgres_swap.copy_properties`); this module does the objects inside it: schemas,
tables, views, sequences, columns' grants, and the default privileges that the tables a
later migration creates will get.

The source is live as it is at the restore, not the archive: its roles are the server's
roles now, so every one of them exists, and a grant made since the backup (a new
reporting role, say) is kept. Objects are matched by schema, name and kind; one that live
does not have keeps the restoring role as owner. ACLs are compared and set whole
(`acldefault` stands in for a NULL, the built-in default), so a revoked default stays
revoked. Grantors are not reproduced: the owner grants everything again.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from game_core.db import DatabaseTarget
from game_core.errors import PreconditionFailed
from integrity.db.connect import Database, Write
from integrity.db.sql import error_reason, quote

# pg_class.relkind -> (the keyword of ALTER ... OWNER, of GRANT ... ON, acldefault's type)
_RELATION_KINDS = {
    "r": ("TABLE", "TABLE", "r"),
    "p": ("TABLE", "TABLE", "r"),
    "v": ("VIEW", "TABLE", "r"),
    "m": ("MATERIALIZED VIEW", "TABLE", "r"),
    "f": ("FOREIGN TABLE", "TABLE", "r"),
    "S": ("SEQUENCE", "SEQUENCE", "s"),
}
# Schemas that belong to the server, not to the game.
_USER_SCHEMAS = "n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'"
# pg_default_acl.defaclobjtype -> the object class of ALTER DEFAULT PRIVILEGES, acldefault's type
_DEFAULT_KINDS = {"r": ("TABLES", "r"), "S": ("SEQUENCES", "s"), "f": ("FUNCTIONS", "f"),
                  "T": ("TYPES", "T"), "n": ("SCHEMAS", "n")}


class AccessNotCopied(PreconditionFailed):
    """Live's owners or grants could not be set on the staging database (our role's rights)."""


@dataclass(frozen=True)
class Grant:
    grantee: str | None  # None: PUBLIC
    privilege: str
    grantable: bool

    def to_sql(self) -> str:
        return "PUBLIC" if self.grantee is None else quote(self.grantee)


@dataclass(frozen=True)
class Secured:
    """One object's owner and whole ACL (built-in default spelled out)."""

    kind: str  # "schema", "column", or a relkind
    schema: str
    name: str
    column: str | None
    owner: str | None  # None for a column: its table's owner owns it
    grants: frozenset[Grant]

    @property
    def key(self) -> tuple:
        return (self.kind, self.schema, self.name, self.column)


@dataclass(frozen=True)
class DefaultPrivileges:
    """One ALTER DEFAULT PRIVILEGES entry: what objects `role` creates (in `schema`) get."""

    role: str
    schema: str | None
    object_class: str
    grants: frozenset[Grant]


@dataclass(frozen=True)
class AccessCopied:
    owners_changed: int
    acls_set: int
    default_privileges: int

    def describe(self) -> str:
        return (f"owners of {self.owners_changed} object(s), grants of {self.acls_set}, "
                f"{self.default_privileges} default privilege entr{'y' if self.default_privileges == 1 else 'ies'} copied from live")


def _grants(connection, acl_sql: str, params: dict) -> dict[tuple, frozenset[Grant]]:
    """{key columns: grants} for a query yielding the key columns and an `acl` aclitem[]."""
    rows = connection.execute(sa.text(
        f"SELECT q.k, CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END AS grantee, "
        f"a.privilege_type, a.is_grantable FROM ({acl_sql}) AS q LEFT JOIN LATERAL aclexplode(q.acl) AS a ON true"
    ), params).all()
    found: dict[tuple, set[Grant]] = {}
    for key, grantee, privilege, grantable in rows:
        bucket = found.setdefault(tuple(key), set())
        if privilege is not None:
            bucket.add(Grant(grantee, privilege, grantable))
    return {key: frozenset(grants) for key, grants in found.items()}


def read_access(connection) -> tuple[dict[tuple, Secured], list[DefaultPrivileges]]:
    """Every user schema, relation and column ACL of the connected database."""
    secured: dict[tuple, Secured] = {}
    schemas = _grants(connection, (
        "SELECT ARRAY['schema', n.nspname, '', ''] AS k, coalesce(n.nspacl, acldefault('n', n.nspowner)) AS acl "
        f"FROM pg_namespace AS n WHERE {_USER_SCHEMAS}"), {})
    owners = dict(connection.execute(sa.text(
        f"SELECT n.nspname, pg_get_userbyid(n.nspowner) FROM pg_namespace AS n WHERE {_USER_SCHEMAS}")).all())
    for (_, schema, _, _), grants in schemas.items():
        item = Secured("schema", schema, "", None, owners[schema], grants)
        secured[item.key] = item
    kinds = ", ".join(f"'{kind}'" for kind in _RELATION_KINDS)
    relations = _grants(connection, (
        "SELECT ARRAY[c.relkind::text, n.nspname, c.relname, ''] AS k, "
        "coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::\"char\", c.relowner)) AS acl "
        f"FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE c.relkind IN ({kinds}) AND {_USER_SCHEMAS}"), {})
    relation_owners = {(kind, schema, name): owner for kind, schema, name, owner in connection.execute(sa.text(
        "SELECT c.relkind::text, n.nspname, c.relname, pg_get_userbyid(c.relowner) "
        f"FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE c.relkind IN ({kinds}) AND {_USER_SCHEMAS}")).all()}
    for (kind, schema, name, _), grants in relations.items():
        item = Secured(kind, schema, name, None, relation_owners[(kind, schema, name)], grants)
        secured[item.key] = item
    # Columns: only those with grants of their own (NULL attacl means "nothing beyond the table's").
    columns = _grants(connection, (
        "SELECT ARRAY['column', n.nspname, c.relname, a.attname::text] AS k, a.attacl AS acl "
        "FROM pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace "
        f"WHERE a.attacl IS NOT NULL AND a.attnum > 0 AND NOT a.attisdropped AND {_USER_SCHEMAS}"), {})
    for (_, schema, name, column), grants in columns.items():
        item = Secured("column", schema, name, column, None, grants)
        secured[item.key] = item
    defaults = _grants(connection, (
        "SELECT ARRAY[pg_get_userbyid(d.defaclrole), coalesce(n.nspname, ''), d.defaclobjtype::text] AS k, "
        "d.defaclacl AS acl FROM pg_default_acl AS d LEFT JOIN pg_namespace AS n ON n.oid = d.defaclnamespace"), {})
    entries = [DefaultPrivileges(role, schema or None, _DEFAULT_KINDS[kind][0], grants)
               for (role, schema, kind), grants in sorted(defaults.items())]
    return secured, entries


def _target_sql(item: Secured) -> str:
    if item.kind == "schema":
        return f"SCHEMA {quote(item.schema)}"
    return f"{quote(item.schema)}.{quote(item.name)}"


def _apply_acl(connection, item: Secured, current: frozenset[Grant]) -> None:
    if item.kind == "schema":
        on = f"SCHEMA {quote(item.schema)}"
    elif item.kind == "column":
        on = None
    else:
        on = f"{_RELATION_KINDS[item.kind][1]} {_target_sql(item)}"
    table = f"{quote(item.schema)}.{quote(item.name)}"
    for grantee in {grant.to_sql() for grant in current}:
        if on is None:
            privileges = sorted({g.privilege for g in current if g.to_sql() == grantee})
            columns = ", ".join(f"{p} ({quote(item.column)})" for p in privileges)
            connection.execute(sa.text(f"REVOKE {columns} ON TABLE {table} FROM {grantee}"))
        else:
            connection.execute(sa.text(f"REVOKE ALL ON {on} FROM {grantee}"))
    for grant in sorted(item.grants, key=lambda g: (g.to_sql(), g.privilege)):
        option = " WITH GRANT OPTION" if grant.grantable else ""
        if on is None:
            connection.execute(sa.text(
                f"GRANT {grant.privilege} ({quote(item.column)}) ON TABLE {table} TO {grant.to_sql()}{option}"))
        else:
            connection.execute(sa.text(f"GRANT {grant.privilege} ON {on} TO {grant.to_sql()}{option}"))


def _apply_defaults(connection, entries: list[DefaultPrivileges], existing: list[DefaultPrivileges]) -> int:
    """Set staging's default privileges to live's: clear what staging has, then grant live's."""
    for entry in existing:
        scope = f"FOR ROLE {quote(entry.role)}" + (f" IN SCHEMA {quote(entry.schema)}" if entry.schema else "")
        for grantee in {grant.to_sql() for grant in entry.grants}:
            connection.execute(sa.text(f"ALTER DEFAULT PRIVILEGES {scope} REVOKE ALL ON {entry.object_class} FROM {grantee}"))
    for entry in entries:
        scope = f"FOR ROLE {quote(entry.role)}" + (f" IN SCHEMA {quote(entry.schema)}" if entry.schema else "")
        if entry.schema is None:
            # A global entry replaces the built-in default (the owner may do everything,
            # PUBLIC may EXECUTE functions and USE types): take that away first, so that
            # what live revoked stays revoked.
            connection.execute(sa.text(f"ALTER DEFAULT PRIVILEGES {scope} REVOKE ALL ON {entry.object_class} FROM PUBLIC"))
            connection.execute(sa.text(f"ALTER DEFAULT PRIVILEGES {scope} REVOKE ALL ON {entry.object_class} FROM {quote(entry.role)}"))
        for grant in sorted(entry.grants, key=lambda g: (g.to_sql(), g.privilege)):
            option = " WITH GRANT OPTION" if grant.grantable else ""
            connection.execute(sa.text(
                f"ALTER DEFAULT PRIVILEGES {scope} GRANT {grant.privilege} ON {entry.object_class} TO {grant.to_sql()}{option}"))
    return len(entries)


def copy_access(live: DatabaseTarget, staging: DatabaseTarget) -> AccessCopied:
    """Give staging's objects live's owners and grants, in one transaction on staging.
    Our role lacking the right to do so is AccessNotCopied, naming the object and the fix;
    the caller drops staging and live is untouched."""
    with Database(live).snapshot() as connection:
        wanted, defaults = read_access(connection)
    owners_changed = acls_set = 0
    with Database(staging).writer(Write.COPY) as engine, engine.begin() as connection:
        current, existing_defaults = read_access(connection)
        item = None
        try:
            # Tables before sequences: a sequence owned by a column follows its table's owner
            # (and refuses an ALTER of its own), so re-read staging before the sequences.
            for phase in (("schema",), ("r", "p", "v", "m", "f"), ("S",)):
                if phase == ("S",):
                    current, _ = read_access(connection)
                for key, item in wanted.items():
                    if item.kind not in phase or key not in current:
                        continue
                    if item.owner is not None and current[key].owner != item.owner:
                        keyword = "SCHEMA" if item.kind == "schema" else _RELATION_KINDS[item.kind][0]
                        name = quote(item.schema) if item.kind == "schema" else _target_sql(item)
                        connection.execute(sa.text(f"ALTER {keyword} {name} OWNER TO {quote(item.owner)}"))
                        owners_changed += 1
            current, _ = read_access(connection)  # owners changed: default ACLs now name the new ones
            for key, item in wanted.items():
                had = current.get(key)
                if item.kind == "column":
                    if not any(k[0] != "column" and k[1:3] == (item.schema, item.name) for k in current):
                        continue  # its table is not in the restored database
                    before = had.grants if had else frozenset()
                elif had is None:
                    continue
                else:
                    before = had.grants
                if before != item.grants:
                    _apply_acl(connection, item, before)
                    acls_set += 1
            # Column grants staging has but live does not (none after --no-privileges, but exact is exact).
            for key, had in current.items():
                if had.kind == "column" and key not in wanted:
                    _apply_acl(connection, Secured("column", had.schema, had.name, had.column, None, frozenset()), had.grants)
                    acls_set += 1
            item = None
            copied_defaults = _apply_defaults(connection, defaults, existing_defaults) if (defaults or existing_defaults) else 0
        except sa.exc.DBAPIError as exc:
            what = "default privileges" if item is None else (
                f"schema {item.schema}" if item.kind == "schema" else f"{item.schema}.{item.name}")
            raise AccessNotCopied(
                f"could not give the restored {what} live's owner and grants: {error_reason(exc)}; run the restore "
                "as a superuser or as a member of the roles that own live's objects; the live database was not changed"
            ) from None
    return AccessCopied(owners_changed, acls_set, copied_defaults)
