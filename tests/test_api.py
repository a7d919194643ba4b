"""integrity.api as programs use it (Alembic's `command` module is the model): what an
operation records and locks is the library's doing, not the CLI's; contradicting options
are usage errors (exit 2) both through the API and on the command line; the one job table
names every job the settings know and an API operation that takes its options."""

from __future__ import annotations

import inspect

import pytest

from backup_helpers import BackupEnv, fill_database, one_error
from game_core.errors import ExitCode, InvalidInput
from test_migrate_dry_run import ADD_COUNTRY, history


@pytest.fixture
def env(tmp_path, sqlite_url) -> BackupEnv:
    fill_database(sqlite_url, players=4, results_per_player=5)
    return BackupEnv(tmp_path, sqlite_url)


def test_a_dry_run_through_the_api_counts_for_migrate_apply(env, tmp_path):
    from integrity import api
    from integrity.invocation import Invocation
    from integrity.recorder import Outcome, Recording

    ini = history(tmp_path, ADD_COUNTRY)
    refused = env.invoke("--no-input", "migrate", "apply", "--alembic-config", str(ini), "--yes")
    assert refused.returncode == 4 and "no passing dry run" in one_error(refused)

    recording = Recording.start(env.settings(), "migrate dry-run")
    report = api.migrate_dry_run(Invocation.recorded(recording), alembic_config=ini, from_live=True)
    recording.finish(Outcome.of(report))
    assert report.passed and report.target_revision == "0002_country"

    code, document = env.invoke_json("--no-input", "migrate", "apply", "--alembic-config", str(ini), "--yes")
    assert code == 0, document
    assert document["result"]["applied"] == ["0002_country"]


def test_pin_and_unpin_take_the_repository_writer_lock_themselves(env):
    from integrity import api
    from integrity.invocation import Invocation
    from integrity.locks import LockHeld

    backup_id = env.create()
    inv = Invocation(env.settings(), command="backup pin")
    with env.repository().writer_lock(command="backup prune", wait_seconds=0):
        with pytest.raises(LockHeld, match="backup prune"):
            api.backup_pin(inv, backup_id=backup_id)
        with pytest.raises(LockHeld, match="backup prune"):
            api.backup_unpin(inv, backup_id=backup_id)
    assert env.listed()[backup_id]["states"] == ["intact"]  # refused before anything was journalled
    assert api.backup_pin(inv, backup_id=backup_id).until == "forever"
    assert env.listed()[backup_id]["states"] == ["intact", "pinned"]


@pytest.mark.parametrize(
    ("operation", "options", "named"),
    [
        ("migrate_lint", {"fail_on": "never"}, "--fail-on 'never'"),
        ("migrate_dry_run", {"fail_on": "never"}, "--fail-on 'never'"),
        ("migrate_dry_run", {"from_live": True, "from_backup": "x"}, "--from-backup and --from-live"),
        ("migrate_dry_run", {"from_live": True, "snapshot": "copy.db"}, "--from-live and --snapshot"),
        ("backup_verify", {"backup_id": "x", "all_": True}, "ID and --all"),
        ("restore", {"backup": "latest", "keep_newer": True, "safety_backup": False}, "--no-safety-backup"),
        ("salvage", {}, "exactly one of --from-backup ID or --from-database NAME"),
        ("audit", {"engine": "ibis"}, "--engine 'ibis'"),
    ],
)
def test_contradicting_options_are_a_usage_error_before_anything_is_opened(tmp_path, operation, options, named):
    from integrity import api
    from integrity.invocation import Invocation
    from integrity.settings import resolve_settings

    # A database that does not exist: the refusal comes before anything would open it.
    settings = resolve_settings(environ={"XDG_DATA_HOME": str(tmp_path)}, cwd=tmp_path,
                                database_url_option=f"sqlite:///{tmp_path / 'missing.db'}")
    with pytest.raises(InvalidInput, match=named.replace("(", r"\(")) as raised:
        getattr(api, operation)(Invocation(settings, command=operation), **options)
    assert raised.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize(
    "args",
    [
        ("migrate", "lint", "--format", "xml"),
        ("migrate", "lint", "--fail-on", "never"),
        ("migrate", "dry-run", "--format", "xml"),
        ("migrate", "dry-run", "--fail-on", "never"),
        ("migrate", "dry-run", "--from-live", "--from-backup", "x"),
        ("migrate", "dry-run", "--from-live", "--snapshot", "copy.db"),
        ("backup", "verify", "x", "--latest"),
        ("restore", "latest", "--yes", "--keep-newer", "--no-safety-backup"),
        ("salvage", "--yes"),
        ("salvage", "--from-backup", "x", "--from-database", "y", "--yes"),
    ],
    ids=lambda args: " ".join(args),
)
def test_usage_conflicts_on_the_command_line_exit_2(env, args):
    before = env.listed_ids()
    result = env.invoke("--no-input", *args)
    assert result.returncode == 2, result.output
    code, document = env.invoke_json("--no-input", *args)
    assert code == 2 and document["exit_code"] == 2 and document["error"]
    assert env.listed_ids() == before  # refused before anything was done


def test_the_job_table_names_every_configurable_job_and_an_api_operation_for_it():
    from integrity import api
    from integrity.invocation import Invocation
    from integrity.jobs import JOBS
    from integrity.settings import JOBS as CONFIGURABLE

    assert tuple(JOBS) == CONFIGURABLE
    for job in JOBS.values():
        inspect.signature(getattr(api, job.operation)).bind(Invocation(None, command=job.command), **job.options)
    assert {name: job.command_line for name, job in JOBS.items()} == {
        "backup": "integrity -q backup create --copy",
        "verify": "integrity -q backup verify --latest",
        "deep_verify": "integrity -q backup verify --latest --deep",
        "prune": "integrity -q backup prune",
        "audit": "integrity -q audit --since-last",
        "audit_full": "integrity -q audit",
        "drill": "integrity -q drill --alternate",
        "drill_pitr": "integrity -q drill --at random",
        "probe": "integrity -q probe",
    }
