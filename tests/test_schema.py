"""The Alembic history creates exactly the models, and the game's schema rules hold."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from game_core.db import create_engine
from game_core.errors import SchemaNotCurrent, SchemaUnknown
from game_core.schema import metadata
from game_core.schema_state import SchemaState, ensure_schema, head_revision, schema_status


def test_autogenerate_finds_no_difference_between_history_and_models(database_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = create_engine(database_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, metadata)
    engine.dispose()
    assert diff == []


def test_autogenerate_compare_sees_a_planted_model_change(database_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    changed = sa.MetaData()
    for table in metadata.tables.values():
        table.to_metadata(changed)
    sa.Table("results", changed, sa.Column("keyboard_layout", sa.String(16)), extend_existing=True)
    engine = create_engine(database_url)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), changed)
    engine.dispose()
    assert any(entry[0] == "add_column" and entry[3].name == "keyboard_layout" for entry in diff)


def test_first_revision_writes_one_store_identity(database_url):
    engine = create_engine(database_url, read_only=True)
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT id, identity_uuid FROM store_identity")).all()
    engine.dispose()
    assert len(rows) == 1 and rows[0][0] == 1 and len(rows[0][1]) == 36


def test_empty_database_gets_the_schema(tmp_path):
    engine = create_engine(str(tmp_path / "new.db"), create_missing=True)
    status = ensure_schema(engine, display_name="new.db")
    assert status.state is SchemaState.CURRENT
    with engine.connect() as connection:
        assert schema_status(connection).revision == head_revision()




def test_older_revision_is_refused_naming_the_migrate_commands(sqlite_url, newer_history):
    engine = create_engine(sqlite_url)
    with pytest.raises(SchemaNotCurrent) as raised:
        ensure_schema(engine, display_name="game.db")
    message = str(raised.value)
    assert "behind head 0002_next" in message
    assert "integrity migrate dry-run" in message and "integrity migrate apply" in message
    with engine.connect() as connection:  # and nothing was upgraded
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0001_initial_schema"


def test_unknown_revision_is_refused(sqlite_url):
    engine = create_engine(sqlite_url)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '0000_missing'"))
    with pytest.raises(SchemaUnknown, match="unknown revision 0000_missing"):
        ensure_schema(engine, display_name="game.db")


def test_tables_without_revision_are_unknown(tmp_path):
    engine = create_engine(str(tmp_path / "foreign.db"), create_missing=True)
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE something (x INTEGER)"))
    with pytest.raises(SchemaUnknown, match="no Alembic revision"):
        ensure_schema(engine, display_name="foreign.db")
