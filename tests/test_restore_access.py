"""A PostgreSQL restore keeps who may do what inside the database (integrity.db.postgres_access).

pg_restore runs with --no-owner --no-privileges, so before this the restored tables
belonged to the restoring role and every grant was gone: a game connecting as its own
role could no longer write a result, and the next migration could not ALTER its tables.
Here live's owners, table, sequence, schema and column grants, and default privileges
are set up the way a production game's roles would be; a restore must leave exactly the
same access behind, and the game's role must still be able to write.
"""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from backup_helpers import BackupEnv, execute, fill_database, one_error
from restore_helpers import drop_restore_leftovers

pytestmark = pytest.mark.postgres

OWNER = "integrity_test_game_owner"
WRITER = "integrity_test_game_writer"
REPORTER = "integrity_test_reporter"
OUTSIDER = "integrity_test_restorer"  # may create databases and read, owns nothing


def _ensure_roles(admin) -> None:
    with admin.connect() as connection:
        for role, options in ((OWNER, "NOLOGIN"), (WRITER, "LOGIN"), (REPORTER, "LOGIN"), (OUTSIDER, "LOGIN CREATEDB")):
            if not connection.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first():
                connection.execute(sa.text(f"CREATE ROLE {role} {options}"))


def _secure_like_production(url: str) -> None:
    engine = sa.create_engine(url)
    try:
        tables = sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
    statements = [f'ALTER TABLE "{table}" OWNER TO {OWNER}' for table in tables]
    statements += [
        f"GRANT USAGE ON SCHEMA public TO {WRITER}",
        f"GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {WRITER}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {WRITER}",
        f"REVOKE DELETE ON results FROM {OWNER}",  # the owner itself gave up deleting results
        f"GRANT SELECT (id, wpm) ON results TO {REPORTER}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER} IN SCHEMA public GRANT SELECT ON TABLES TO {REPORTER}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER} GRANT USAGE ON SEQUENCES TO {WRITER}",
    ]
    execute(url, *statements)


def access(url: str) -> dict[str, list]:
    """Owners and ACLs as the catalogs hold them, independently of the code under test."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            def rows(sql: str) -> list:
                # An ACL's items in a fixed order: the same grants may be stored in another order.
                sql = re.sub(r"_acl\(([a-z.]+)\)", r"(SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(\1) AS x)", sql)
                return sorted(tuple(row) for row in connection.execute(sa.text(sql)).all())

            return {
                "relations": rows(
                    "SELECT c.relname, c.relkind::text, pg_get_userbyid(c.relowner), coalesce(_acl(c.relacl), 'default') "
                    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'S', 'v')"),
                "schema": rows("SELECT nspname, pg_get_userbyid(nspowner), _acl(nspacl) FROM pg_namespace WHERE nspname = 'public'"),
                "columns": rows(
                    "SELECT c.relname, a.attname, _acl(a.attacl) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND a.attacl IS NOT NULL"),
                "defaults": rows(
                    "SELECT pg_get_userbyid(d.defaclrole), coalesce(n.nspname, ''), d.defaclobjtype::text, _acl(d.defaclacl) "
                    "FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace"),
            }
    finally:
        engine.dispose()


@pytest.fixture
def secured(pg_url, pg_admin, tmp_path, request):
    """A filled PostgreSQL game database secured like production, and a backup of it."""
    request.addfinalizer(lambda: drop_restore_leftovers(pg_admin, sa.make_url(pg_url).database))
    _ensure_roles(pg_admin)
    fill_database(pg_url, players=4, results_per_player=5)
    _secure_like_production(pg_url)
    env = BackupEnv(tmp_path, pg_url)
    return env, env.create(), access(pg_url)


def test_a_restore_keeps_owners_grants_and_default_privileges(secured):
    env, backup_id, before = secured
    assert any(owner == OWNER for _, _, owner, _ in before["relations"])  # the fixture did secure it
    assert before["columns"] and before["defaults"]
    result = env.invoke("restore", backup_id, "--yes")
    assert result.returncode == 0, result.output
    assert access(env.url) == before
    # The game's role still writes, through its grants and the sequence's.
    writer_url = sa.make_url(env.url).set(username=WRITER).render_as_string(hide_password=False)
    execute(writer_url, "INSERT INTO players (username, created_at) VALUES ('after_restore', CURRENT_TIMESTAMP)")


def test_without_the_copy_the_check_sees_the_access_lost(secured, monkeypatch):
    """The fixture breaks what the first test checks: the same restore without the copy."""
    import integrity.db.postgres_swap as postgres_swap

    env, backup_id, before = secured
    monkeypatch.setattr(postgres_swap, "copy_access", lambda live, staging: None)
    assert env.invoke("restore", backup_id, "--yes").returncode == 0
    after = access(env.url)
    assert after["relations"] != before["relations"] and after["defaults"] != before["defaults"]


def test_a_role_that_cannot_hand_objects_to_their_owner_is_refused_and_live_is_untouched(secured, pg_admin):
    env, backup_id, _ = secured
    execute(env.url, f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {OUTSIDER}")
    granted = access(env.url)
    outsider_url = sa.make_url(env.url).set(username=OUTSIDER).render_as_string(hide_password=False)
    outsider = BackupEnv(env.tmp_path, outsider_url)
    result = outsider.invoke("restore", backup_id, "--yes", "--no-safety-backup")
    assert result.returncode == 4, result.output
    line = one_error(result)
    assert "live's owner and grants" in line and "the live database was not changed" in line
    assert access(env.url) == granted
    with pg_admin.connect() as connection:
        left = connection.execute(sa.text("SELECT datname FROM pg_database WHERE datname LIKE :p"),
                                  {"p": sa.make_url(env.url).database + "\\_restore\\_%"}).scalars().all()
    assert left == []  # the staging database was dropped


# ---------------------------------------------------------------- other roles' sessions


def test_a_restoring_role_without_pg_read_all_stats_still_sees_other_roles_sessions(secured, pg_admin):
    """pg_stat_activity hides another role's backend_type from a role without
    pg_read_all_stats; the session check used to filter on it, found nobody, and the swap
    then failed on the rename instead of naming who is connected."""
    env, backup_id, _ = secured
    live = sa.make_url(env.url).database
    tables = [f'"{t}"' for t in sa.inspect(sa.create_engine(env.url)).get_table_names()]
    execute(env.url, *[f"ALTER TABLE {table} OWNER TO {OUTSIDER}" for table in tables])
    with pg_admin.connect() as connection:
        connection.execute(sa.text(f'ALTER DATABASE "{live}" OWNER TO {OUTSIDER}'))
        assert not connection.execute(sa.text("SELECT pg_has_role(:r, 'pg_read_all_stats', 'MEMBER')"), {"r": OUTSIDER}).scalar()
    superuser = sa.create_engine(env.url, connect_args={"application_name": "someone_elses_session"})
    outsider = BackupEnv(env.tmp_path, sa.make_url(env.url).set(username=OUTSIDER).render_as_string(hide_password=False))
    try:
        with superuser.connect() as held:
            held.execute(sa.text("SELECT 1"))
            result = outsider.invoke("--no-input", "restore", backup_id, "--yes", "--no-safety-backup")
    finally:
        superuser.dispose()
    assert result.returncode == 4, result.output
    line = one_error(result)
    assert "other session(s) are connected" in line and "someone_elses_session" in line, line
