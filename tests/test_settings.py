"""Configuration: the schema's defaults, the layers (TOML, environment, flags), the
database URL and config file search orders, and clear errors for every bad input.

`resolve_settings` takes the environment as an argument (it never reads `os.environ`),
so most tests hand it a plain dict.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from game_core.errors import ExitCode
from integrity.errors import ConfigInvalid
from integrity.settings import JOBS, SECTIONS, Settings, resolve_settings, schedule_seconds, starter_toml

ALLOWED_SECTIONS = "[database], [state], [backups], [schedule], [objectives], [audits], [metrics], [restore], [pitr], [migrate], [notify]"
CRON_OR_INTERVAL = (
    "a 5-field cron expression that fires ('0 * * * *'), an interval from 1s to 366d ('30s', '15m', '1h', '1d') or 'off'"
)


@pytest.fixture
def xdg(tmp_path) -> Path:
    return tmp_path / "xdg-data"


@pytest.fixture
def data_dir(xdg) -> Path:
    return xdg / "typing-game"


@pytest.fixture
def cwd(tmp_path) -> Path:
    path = tmp_path / "somewhere-else"
    path.mkdir()
    return path


@pytest.fixture
def resolve(xdg, cwd):
    """resolve_settings with XDG_DATA_HOME set and any extra variables and options."""

    def run(env: dict[str, str] | None = None, **options) -> Settings:
        environ = {"XDG_DATA_HOME": str(xdg), **(env or {})}
        options.setdefault("cwd", cwd)
        return resolve_settings(environ=environ, **options)

    return run


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def config_error(resolve, toml: str | None = None, env: dict[str, str] | None = None, *, cwd: Path) -> str:
    """The message of the ConfigInvalid raised; one about a file value must name the file."""
    options = {}
    if toml is not None:
        options["config_option"] = str(write(cwd / "conf.toml", toml))
    with pytest.raises(ConfigInvalid) as raised:
        resolve(env, **options)
    assert raised.value.exit_code == ExitCode.PRECONDITION == 4
    message = str(raised.value)
    if toml is not None and "INTEGRITY_" not in message.split(";", 1)[0] and not message.startswith("config file"):
        suffix = f" (in {options['config_option']})"
        assert message.endswith(suffix), message
        message = message[: -len(suffix)]
    return message


# ---------------------------------------------------------------- defaults


def expected_defaults(data_dir: Path) -> dict:
    """DESIGN.md section 4's schema with its defaults (objectives as documented there:
    RPO 1 hour, RTO 10 minutes, deep verification at most 2 days old)."""
    return {
        "database": {
            "url": f"sqlite:///{data_dir}/game.db",
            "busy_timeout_ms": 5000,
            "lock_timeout_ms": 5000,
            "statement_timeout_ms": 0,
        },
        "state": {"dir": str(data_dir / "state"), "ledger_url": ""},
        "backups": {
            "repository": str(data_dir / "backups"),
            "compression_level": 3,
            "shrink_tolerance": 0.10,
            "size_drop_tolerance": 0.50,
            "signing_public_key": "",
            "signing_key_file": "",
            "encrypt_to": [],
            "identity_file": "",
            "retention": {"keep_last": 7, "keep_hourly": 24, "keep_daily": 7, "keep_weekly": 4, "keep_monthly": 6},
            "s3": {"endpoint_url": "", "region": "", "path_style": False, "object_lock_mode": "", "object_lock_days": 0},
        },
        "schedule": {
            "backup": "1h",
            "verify": "1h",
            "deep_verify": "1d",
            "prune": "1d",
            "audit": "15m",
            "audit_full": "1d",
            "drill": "1d",
            "drill_pitr": "off",
            "probe": "1m",
            "pings": {},
        },
        "objectives": {
            "rpo_seconds": 3600,
            "rto_seconds": 600,
            "deep_verify_max_age_seconds": 2 * 86400,
            "probe_min_success_ratio": 0.99,
            "copy_max_age_seconds": 86400,
        },
        "audits": {
            "samples": 5,
            "chunk_size": 200_000,
            "history_retention_days": 90,
            "drift_window_runs": 14,
            "drift_min_history": 5,
            "max_share_jump": 0.001,
        },
        "metrics": {"path": str(data_dir / "state" / "metrics.prom")},
        "restore": {"safety_pin_hours": 168},
        "pitr": {
            "enabled": False,
            "repository": str(data_dir / "pitr"),
            "resolution_seconds": 1.0,
            "lag_objective_seconds": 10,
            "sync_interval": "1s",
            "archive_timeout_seconds": 60,
            "pg_data_dir": "",
            "pg_bindir": "",
            "stanza": "game",
            "litestream_bin": "",
            "store": "",
        },
        "migrate": {"lock_budget": 1.0},
        "notify": {
            "targets": [],
            "conditions": ["job_failed", "backup_suspect", "drill_failed", "audit_dirty"],
            "timeout_seconds": 10,
        },
        "config_path": None,
        "data_dir": str(data_dir),
        "repositories": [],
    }


def test_every_section_has_its_documented_defaults(resolve, data_dir):
    settings = resolve()
    assert settings.describe() == expected_defaults(data_dir)
    assert settings.config_path is None and settings.config_display == "none (defaults)"
    assert list(SECTIONS) == ["database", "state", "backups", "schedule", "objectives", "audits", "metrics", "restore", "pitr", "migrate", "notify"]


def test_schedule_has_one_entry_per_documented_job(resolve):
    jobs = {f.name for f in dataclasses.fields(resolve().schedule)} - {"pings"}
    assert jobs == set(JOBS) == {"backup", "verify", "deep_verify", "prune", "audit", "audit_full", "drill", "drill_pitr", "probe"}


def test_defaults_do_not_depend_on_the_working_directory(resolve, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    assert resolve().describe() == resolve(cwd=other).describe()


def test_resolution_reads_the_environment_given_never_os_environ(resolve, monkeypatch):
    monkeypatch.setenv("INTEGRITY_BACKUPS__COMPRESSION_LEVEL", "19")
    monkeypatch.setenv("INTEGRITY_DATABASE_URL", "sqlite:////elsewhere.db")
    settings = resolve()
    assert settings.backups.compression_level == 3
    assert settings.database_url.endswith("/typing-game/game.db")


# ---------------------------------------------------------------- layers


FILE = """
[database]
busy_timeout_ms = 250

[backups]
compression_level = 9
shrink_tolerance = 0.5

[backups.retention]
keep_last = 3
keep_hourly = 48

[schedule]
backup = "*/15 * * * *"
drill = "off"

[schedule.pings]
backup = "https://hc-ping.com/0b4c"

[objectives]
rpo_seconds = 900

[audits]
samples = 0
"""


def test_toml_overrides_the_defaults_and_leaves_the_rest(resolve, cwd):
    path = write(cwd / "integrity.toml", FILE)
    settings = resolve()
    assert settings.config_path == path
    assert settings.database.busy_timeout_ms == 250
    assert settings.backups.compression_level == 9
    assert settings.backups.shrink_tolerance == 0.5
    assert settings.backups.retention.keep_last == 3
    assert settings.backups.retention.keep_hourly == 48
    assert settings.backups.retention.keep_daily == 7  # untouched: the default
    assert settings.schedule.backup == "*/15 * * * *"
    assert settings.schedule.drill == "off"
    assert settings.schedule.verify == "1h"
    assert settings.schedule.pings == {"backup": "https://hc-ping.com/0b4c"}
    assert settings.objectives.rpo_seconds == 900
    assert settings.objectives.rto_seconds == 600
    assert settings.audits.samples == 0


def test_environment_overrides_toml(resolve, cwd):
    write(cwd / "integrity.toml", FILE)
    settings = resolve(
        {
            "INTEGRITY_BACKUPS__COMPRESSION_LEVEL": "5",
            "INTEGRITY_BACKUPS__SHRINK_TOLERANCE": "0.25",
            "INTEGRITY_SCHEDULE__BACKUP": "30s",
            "INTEGRITY_OBJECTIVES__RPO_SECONDS": "120",
        }
    )
    assert settings.backups.compression_level == 5
    assert settings.backups.shrink_tolerance == 0.25
    assert settings.schedule.backup == "30s"
    assert settings.objectives.rpo_seconds == 120
    assert settings.database.busy_timeout_ms == 250  # from the file, no variable for it


def test_nested_environment_variable_overrides_one_key_of_a_nested_table(resolve, cwd):
    write(cwd / "integrity.toml", FILE)
    settings = resolve({"INTEGRITY_BACKUPS__RETENTION__KEEP_LAST": "12"})
    assert settings.backups.retention.keep_last == 12
    assert settings.backups.retention.keep_hourly == 48  # the file's sibling survives the merge
    assert settings.backups.compression_level == 9


def test_nested_environment_variable_for_ping_urls(resolve):
    settings = resolve({"INTEGRITY_SCHEDULE__PINGS__DRILL": "https://hc-ping.com/dr1ll"})
    assert settings.schedule.pings == {"drill": "https://hc-ping.com/dr1ll"}


def test_flags_override_the_environment(resolve, cwd):
    flag_file = write(cwd / "flag.toml", "[backups]\ncompression_level = 11\n")
    env_file = write(cwd / "env.toml", "[backups]\ncompression_level = 12\n")
    settings = resolve(
        {"INTEGRITY_CONFIG": str(env_file), "INTEGRITY_DATABASE_URL": "sqlite:////from/env.db"},
        config_option=str(flag_file),
        database_url_option="sqlite:////from/flag.db",
    )
    assert settings.config_path == flag_file
    assert settings.backups.compression_level == 11
    assert settings.database_url == "sqlite:////from/flag.db"


# ---------------------------------------------------------------- the database URL


@pytest.mark.parametrize(
    "layers, expected",
    [
        (("flag", "env", "toml", "game"), "sqlite:////from/flag.db"),
        (("env", "toml", "game"), "sqlite:////from/env.db"),
        (("toml", "game"), "sqlite:////from/toml.db"),
        (("game",), "sqlite:////from/game.db"),
        ((), None),  # the embedded default
    ],
)
def test_database_url_precedence(resolve, cwd, data_dir, layers, expected):
    env = {}
    options = {}
    if "flag" in layers:
        options["database_url_option"] = "sqlite:////from/flag.db"
    if "env" in layers:
        env["INTEGRITY_DATABASE_URL"] = "sqlite:////from/env.db"
    if "toml" in layers:
        write(cwd / "integrity.toml", '[database]\nurl = "sqlite:////from/toml.db"\n')
    if "game" in layers:
        env["GAME_DATABASE_URL"] = "sqlite:////from/game.db"
    settings = resolve(env, **options)
    assert settings.database_url == (expected or f"sqlite:///{data_dir}/game.db")


@pytest.mark.parametrize("variable", ["INTEGRITY_DATABASE_URL", "GAME_DATABASE_URL"])
@pytest.mark.parametrize("value", ["", "  "])
def test_a_database_variable_set_but_empty_is_refused_not_the_default(resolve, variable, value):
    """An unset shell variable expanded into `INTEGRITY_DATABASE_URL=$GAME_DB` must not
    make the tool guard (back up, restore into) the embedded default instead."""
    from game_core.errors import InvalidInput

    with pytest.raises(InvalidInput, match=f"{variable} is set but empty"):
        resolve({variable: value})


def test_a_database_variable_set_but_empty_is_exit_2_in_one_line_through_the_cli(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTEGRITY_", "GAME_"))}
    env.update(XDG_DATA_HOME=str(tmp_path), INTEGRITY_DATABASE_URL="")
    completed = subprocess.run([sys.executable, "-m", "integrity.cli", "status"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.strip().splitlines() == [
        "Error: INTEGRITY_DATABASE_URL is set but empty; give the database's URL or unset it"]
    assert not (tmp_path / "typing-game").exists()  # nothing was created for the default database


def test_embedded_default_is_an_absolute_path_in_the_xdg_data_dir(resolve, xdg):
    url = resolve().database_url
    assert url == f"sqlite:///{xdg}/typing-game/game.db"
    assert Path(url.removeprefix("sqlite:///")).is_absolute()


def test_embedded_default_without_xdg_is_under_home(cwd, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    settings = resolve_settings(environ={}, cwd=cwd)
    assert settings.database_url == f"sqlite:///{tmp_path}/home/.local/share/typing-game/game.db"


def test_long_form_database_variable_beats_the_file_and_loses_to_the_short_form(resolve, cwd):
    write(cwd / "integrity.toml", '[database]\nurl = "sqlite:////from/toml.db"\n')
    assert resolve({"INTEGRITY_DATABASE__URL": "sqlite:////from/long.db"}).database_url == "sqlite:////from/long.db"
    both = {"INTEGRITY_DATABASE__URL": "sqlite:////from/long.db", "INTEGRITY_DATABASE_URL": "sqlite:////from/short.db"}
    assert resolve(both).database_url == "sqlite:////from/short.db"


# ---------------------------------------------------------------- paths


def test_relative_paths_from_the_file_are_relative_to_the_data_directory(resolve, cwd, data_dir):
    write(cwd / "integrity.toml", '[state]\ndir = "mystate"\n[backups]\nrepository = "repo/main"\n[metrics]\npath = "m/x.prom"\n')
    settings = resolve()
    assert settings.state.dir == data_dir / "mystate"
    assert settings.backups.repository == data_dir / "repo" / "main"
    assert settings.metrics.path == data_dir / "m" / "x.prom"
    assert settings.ledger_path == data_dir / "mystate" / "ledger.db"


def test_relative_paths_from_the_environment_are_relative_to_the_data_directory(resolve, data_dir):
    settings = resolve({"INTEGRITY_STATE__DIR": "s2", "INTEGRITY_BACKUPS__REPOSITORY": "b2"})
    assert settings.state.dir == data_dir / "s2"
    assert settings.backups.repository == data_dir / "b2"


def test_absolute_and_home_paths_are_kept(resolve, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    settings = resolve({"INTEGRITY_STATE__DIR": str(tmp_path / "abs"), "INTEGRITY_BACKUPS__REPOSITORY": "~/repo"})
    assert settings.state.dir == tmp_path / "abs"
    assert settings.backups.repository == tmp_path / "home" / "repo"


# ---------------------------------------------------------------- config search order


@pytest.fixture
def four_config_files(cwd, data_dir, tmp_path):
    """One file at each place of the search order, each with its own compression level."""
    return {
        "flag": write(tmp_path / "flag.toml", "[backups]\ncompression_level = 11\n"),
        "env": write(tmp_path / "env.toml", "[backups]\ncompression_level = 12\n"),
        "cwd": write(cwd / "integrity.toml", "[backups]\ncompression_level = 13\n"),
        "data": write(data_dir / "integrity.toml", "[backups]\ncompression_level = 14\n"),
    }


def test_config_search_order(resolve, four_config_files):
    files = four_config_files
    env = {"INTEGRITY_CONFIG": str(files["env"])}

    chosen = resolve(env, config_option=str(files["flag"]))
    assert (chosen.config_path, chosen.backups.compression_level) == (files["flag"], 11)

    chosen = resolve(env)
    assert (chosen.config_path, chosen.backups.compression_level) == (files["env"], 12)

    chosen = resolve()
    assert (chosen.config_path, chosen.backups.compression_level) == (files["cwd"], 13)

    files["cwd"].unlink()
    chosen = resolve()
    assert (chosen.config_path, chosen.backups.compression_level) == (files["data"], 14)
    assert chosen.config_display == str(files["data"])

    files["data"].unlink()
    chosen = resolve()
    assert (chosen.config_path, chosen.backups.compression_level) == (None, 3)


def test_relative_config_option_is_made_absolute(resolve, cwd, monkeypatch):
    monkeypatch.chdir(cwd)
    write(cwd / "mine.toml", "[backups]\ncompression_level = 15\n")
    settings = resolve(config_option="mine.toml")
    assert settings.config_path == cwd / "mine.toml" and settings.config_path.is_absolute()
    assert settings.backups.compression_level == 15


def test_explicit_config_file_that_is_missing_is_refused_naming_the_fix(resolve, tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigInvalid) as raised:
        resolve(config_option=str(missing))
    assert str(raised.value) == f"config file {missing} does not exist; create it with `integrity --config {missing} init`"
    with pytest.raises(ConfigInvalid, match="nope.toml does not exist"):
        resolve({"INTEGRITY_CONFIG": str(missing)})


def test_missing_explicit_config_is_allowed_for_init_which_writes_it(resolve, tmp_path):
    settings = resolve(config_option=str(tmp_path / "nope.toml"), require_config_file=False)
    assert settings.config_path is None


# ---------------------------------------------------------------- unknown keys


def test_unknown_key_in_toml_is_rejected_naming_it_and_what_is_allowed(resolve, cwd):
    message = config_error(resolve, "[backups]\ncompresion_level = 3\n", cwd=cwd)
    assert message == (
        "unknown key [backups] compresion_level; allowed in [backups]: "
        "compression_level, encrypt_to, identity_file, repository, retention, s3, shrink_tolerance, signing_key_file, signing_public_key, size_drop_tolerance"
    )


def test_unknown_key_in_a_nested_toml_table_is_rejected(resolve, cwd):
    message = config_error(resolve, "[backups.retention]\nkeep_forever = 1\n", cwd=cwd)
    assert message == (
        "unknown key [backups.retention] keep_forever; allowed in [backups.retention]: "
        "keep_daily, keep_hourly, keep_last, keep_monthly, keep_weekly"
    )


def test_unknown_key_in_the_environment_is_rejected_naming_the_variable(resolve, cwd):
    message = config_error(resolve, env={"INTEGRITY_OBJECTIVES__RPO": "60"}, cwd=cwd)
    assert message == (
        "unknown key INTEGRITY_OBJECTIVES__RPO ([objectives] rpo); allowed in [objectives]: "
        "copy_max_age_seconds, deep_verify_max_age_seconds, probe_min_success_ratio, rpo_seconds, rto_seconds"
    )


def test_unknown_nested_key_in_the_environment_is_rejected(resolve, cwd):
    message = config_error(resolve, env={"INTEGRITY_BACKUPS__RETENTION__KEEP_FOREVER": "1"}, cwd=cwd)
    assert message.startswith(
        "unknown key INTEGRITY_BACKUPS__RETENTION__KEEP_FOREVER ([backups.retention] keep_forever); "
        "allowed in [backups.retention]: keep_daily,"
    )


def test_unknown_section_in_toml_is_rejected(resolve, cwd):
    message = config_error(resolve, "[backup]\nrepository = \"x\"\n", cwd=cwd)
    assert message == f"unknown section [backup]; allowed sections: {ALLOWED_SECTIONS}"


def test_unknown_section_in_the_environment_is_rejected(resolve, cwd):
    message = config_error(resolve, env={"INTEGRITY_BACKUP__REPOSITORY": "x"}, cwd=cwd)
    assert message == f"unknown section INTEGRITY_BACKUP__REPOSITORY ([backup]); allowed sections: {ALLOWED_SECTIONS}"


def test_key_above_the_first_section_is_rejected(resolve, cwd):
    message = config_error(resolve, 'url = "sqlite:////x.db"\n[database]\n', cwd=cwd)
    assert message == f"unknown key 'url' outside any section; keys belong in the sections {ALLOWED_SECTIONS}"


def test_a_value_where_a_table_belongs_is_rejected(resolve, cwd):
    message = config_error(resolve, "[backups]\nretention = 5\n", cwd=cwd)
    assert message == (
        "invalid value 5 for [backups.retention]; allowed: a table with the keys "
        "keep_daily, keep_hourly, keep_last, keep_monthly, keep_weekly"
    )
    # also when the environment sets a key inside that table
    message = config_error(resolve, "[backups]\nretention = 5\n", {"INTEGRITY_BACKUPS__RETENTION__KEEP_LAST": "2"}, cwd=cwd)
    assert message.startswith("invalid value 5 for [backups.retention]")


def test_variables_that_are_not_keys_are_ignored(resolve):
    settings = resolve({"INTEGRITY_REQUIRE_POSTGRES": "1", "INTEGRITY_TEST_PG_URL": "x", "INTEGRITYX": "1"})
    assert settings.backups.compression_level == 3


# ---------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    "toml, env, message",
    [
        (
            '[backups]\ncompression_level = "high"\n', {},
            "invalid value 'high' for [backups] compression_level; allowed: a whole number",
        ),
        (
            "[backups]\ncompression_level = 23\n", {},
            "invalid value 23 for [backups] compression_level; allowed: a number from 1 to 22",
        ),
        (
            "[backups]\ncompression_level = 0\n", {},
            "invalid value 0 for [backups] compression_level; allowed: a number from 1 to 22",
        ),
        (
            "[backups.retention]\nkeep_last = true\n", {},
            "invalid value True for [backups.retention] keep_last; allowed: a whole number",
        ),
        (
            "[backups]\nshrink_tolerance = 1.5\n", {},
            "invalid value 1.5 for [backups] shrink_tolerance; allowed: a number from 0.0 to 1.0",
        ),
        (
            "[objectives]\nrpo_seconds = 0\n", {},
            "invalid value 0 for [objectives] rpo_seconds; allowed: a number from 1 to 31,622,400",
        ),
        (
            '[state]\ndir = ""\n', {},
            "invalid value '' for [state] dir; allowed: a file system path",
        ),
        (
            "[schedule]\nbackup = 60\n", {},
            "invalid value 60 for [schedule] backup; allowed: text",
        ),
        (
            '[schedule]\nbackup = "hourly"\n', {},
            f"invalid value 'hourly' for [schedule] backup; allowed: {CRON_OR_INTERVAL}",
        ),
        (
            '[database]\nurl = "game.db"\n', {},
            "invalid value 'game.db' for [database] url; allowed: a database URL (sqlite:///PATH or postgresql://...) or empty",
        ),
        (
            None, {"INTEGRITY_BACKUPS__RETENTION__KEEP_LAST": "0"},
            "invalid value '0' for INTEGRITY_BACKUPS__RETENTION__KEEP_LAST ([backups.retention] keep_last); "
            "allowed: a number from 1 to 100,000",
        ),
        (
            None, {"INTEGRITY_BACKUPS__RETENTION__KEEP_LAST": "seven"},
            "invalid value 'seven' for INTEGRITY_BACKUPS__RETENTION__KEEP_LAST ([backups.retention] keep_last); "
            "allowed: a whole number",
        ),
        (
            None, {"INTEGRITY_OBJECTIVES__RPO_SECONDS": "1.5"},
            "invalid value '1.5' for INTEGRITY_OBJECTIVES__RPO_SECONDS ([objectives] rpo_seconds); allowed: a whole number",
        ),
        (
            None, {"INTEGRITY_BACKUPS__SHRINK_TOLERANCE": "lots"},
            "invalid value 'lots' for INTEGRITY_BACKUPS__SHRINK_TOLERANCE ([backups] shrink_tolerance); allowed: a number",
        ),
        (
            None, {"INTEGRITY_SCHEDULE__AUDIT": "every 15m"},
            f"invalid value 'every 15m' for INTEGRITY_SCHEDULE__AUDIT ([schedule] audit); allowed: {CRON_OR_INTERVAL}",
        ),
        (
            '[schedule.pings]\nbackup = "ftp://hc-ping.com/5ecret-uuid"\n', {},
            "invalid ping URL 'ftp://hc-ping.com/***' for [schedule.pings] backup; allowed: an http:// or https:// URL",
        ),
        (
            None, {"INTEGRITY_SCHEDULE__PINGS__PROBE": "hc-ping.com/5ecret-uuid"},
            "invalid ping URL 'hc-ping.com/***' for INTEGRITY_SCHEDULE__PINGS__PROBE ([schedule.pings] probe); "
            "allowed: an http:// or https:// URL",
        ),
        (
            '[schedule.pings]\nbackups = "https://hc-ping.com/x"\n', {},
            "unknown job 'backups' in [schedule.pings] backups; "
            "allowed: backup, verify, deep_verify, prune, audit, audit_full, drill, drill_pitr, probe",
        ),
        (
            None, {"INTEGRITY_SCHEDULE__PINGS__NIGHTLY": "https://hc-ping.com/x"},
            "unknown job 'nightly' in INTEGRITY_SCHEDULE__PINGS__NIGHTLY ([schedule.pings] nightly); "
            "allowed: backup, verify, deep_verify, prune, audit, audit_full, drill, drill_pitr, probe",
        ),
    ],
)
def test_bad_values_are_rejected_naming_key_value_and_what_is_allowed(resolve, cwd, toml, env, message):
    assert config_error(resolve, toml, env, cwd=cwd) == message


def test_a_bad_ping_url_never_shows_its_secret_path(resolve, cwd):
    message = config_error(resolve, env={"INTEGRITY_SCHEDULE__PINGS__BACKUP": "ftp://u:pw9@hc-ping.com/5ecret-uuid"}, cwd=cwd)
    assert "5ecret" not in message and "pw9" not in message
    assert "'ftp://hc-ping.com/***'" in message


def test_a_bad_url_value_is_masked_in_the_message(resolve, cwd):
    message = config_error(resolve, env={"INTEGRITY_STATE__LEDGER_URL": "postgresql//ops:hunter22@db/ledger"}, cwd=cwd)
    assert "hunter22" not in message
    assert message.startswith("invalid value 'postgresql//ops:***@db/ledger' for INTEGRITY_STATE__LEDGER_URL")


@pytest.mark.parametrize(
    "value",
    ["0 * * * *", "*/15 * * * *", "0 3 * * mon-fri", "0 0 1 jan,jul *", "5,35 1-5/2 * * 0", "0 0 * * 7",
     "30s", "15m", "1h", "1d", "90m", "off"],
)
def test_valid_schedule_values_are_accepted(resolve, value):
    assert resolve({"INTEGRITY_SCHEDULE__BACKUP": value}).schedule.backup == value


@pytest.mark.parametrize(
    "value",
    ["60 * * * *", "0 24 * * *", "0 0 0 * *", "0 0 * 13 *", "0 0 * * 8", "*/0 * * * *", "5-1 * * * *",
     "0 * * *", "0 * * * * *", "0s", "15x", "1.5h", "-1h", "h", "OFF", "never", ""],
)
def test_invalid_schedule_values_are_rejected(resolve, cwd, value):
    message = config_error(resolve, env={"INTEGRITY_SCHEDULE__BACKUP": value}, cwd=cwd)
    assert message == f"invalid value {value!r} for INTEGRITY_SCHEDULE__BACKUP ([schedule] backup); allowed: {CRON_OR_INTERVAL}"


def test_schedule_seconds_of_intervals():
    assert [schedule_seconds(v) for v in ("30s", "15m", "1h", "1d", "0 * * * *", "off")] == [30, 900, 3600, 86400, None, None]


def test_invalid_toml_is_rejected_naming_the_file_and_the_line(resolve, cwd):
    message = config_error(resolve, "[backups\nrepository = 1\n", cwd=cwd)
    assert message.startswith(f"config file {cwd / 'conf.toml'} is not valid TOML: ")
    assert "line 1" in message
    assert "\n" not in message


def test_unreadable_config_is_rejected(resolve, cwd):
    (cwd / "dir.toml").mkdir()
    # a directory is not a file: the search treats it as missing
    with pytest.raises(ConfigInvalid, match="dir.toml does not exist"):
        resolve(config_option=str(cwd / "dir.toml"))


# ---------------------------------------------------------------- the starter file


def test_starter_toml_parses_and_resolves_to_exactly_the_defaults(resolve, cwd, data_dir):
    text = starter_toml()
    parsed = tomllib.loads(text)
    assert set(parsed) == set(SECTIONS)
    assert "retention" in parsed["backups"]
    path = write(cwd / "integrity.toml", text)
    from_file = resolve()
    assert from_file.config_path == path
    assert dataclasses.replace(from_file, config_path=None) == resolve(config_option=None, cwd=cwd.parent)
    assert from_file.describe() == {**expected_defaults(data_dir), "config_path": str(path)}


def test_starter_toml_shows_every_key_with_help(resolve):
    text = starter_toml()
    for name, cls in SECTIONS.items():
        assert f"[{name}]" in text
        for f in dataclasses.fields(cls):
            if not dataclasses.is_dataclass(f.type) and f.name not in ("pings", "retention", "s3"):
                assert f"\n{f.name} = " in text, f.name
    for key in ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly"):
        assert f"\n{key} = " in text
    assert "[backups.retention]" in text and "[backups.s3]" in text
    assert "# [schedule.pings] backup = " in text  # commented: pings are secrets


def test_starter_toml_with_a_database_url_resolves_to_it(resolve, cwd):
    write(cwd / "integrity.toml", starter_toml("sqlite:////srv/game.db"))
    assert resolve().database_url == "sqlite:////srv/game.db"


# ---------------------------------------------------------------- describe() and frozenness


def test_describe_masks_every_secret(resolve):
    settings = resolve(
        {
            "INTEGRITY_STATE__LEDGER_URL": "postgresql://ops:ledgerpw1@db/ledger",
            "INTEGRITY_SCHEDULE__PINGS__BACKUP": "https://hc-ping.com/pingsecret-uuid",
        },
        database_url_option="postgresql://game:dbpw1@db:5432/game?password=qpw1",
    )
    described = settings.describe()
    text = repr(described)
    for secret in ("ledgerpw1", "pingsecret", "dbpw1", "qpw1"):
        assert secret not in text
    assert described["state"]["ledger_url"] == "postgresql://ops:***@db/ledger"
    assert described["database"]["url"] == "postgresql://game:***@db:5432/game?password=***"
    assert described["schedule"]["pings"] == {"backup": "***"}
    # the object itself keeps the real values for the code that connects
    assert settings.state.ledger_url == "postgresql://ops:ledgerpw1@db/ledger"


def test_settings_are_frozen(resolve):
    settings = resolve()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.data_dir = Path("/elsewhere")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.backups.compression_level = 9
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.backups.retention.keep_last = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.database.url = "sqlite:////x.db"
