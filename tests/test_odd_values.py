"""Huge, negative, zero and fractional numbers, and other odd values (issue 14, item 11).

Every numeric option of both programs and every numeric setting has a documented range,
checked where it is given: an option out of range is a usage error (exit 2) naming it,
a setting out of range is exit 4 naming its key. The cases are generated from the Typer
apps' parameters and from the settings schema, so a new option or key is covered (and
must declare its bounds) without editing this file.
"""

from __future__ import annotations

import math
from dataclasses import fields, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import get_args, get_type_hints

import pytest

from cli_runner import CliRunner, command_of
from game_core.cli import app as game_app
from integrity.cli import app as integrity_app
from integrity.errors import ConfigInvalid
from integrity.settings import SECTIONS, resolve_settings

runner = CliRunner()


# ------------------------------------------------------------------ command options


def _commands(app):
    """(program, path, click command) of every command, subcommands included."""
    root = command_of(app)

    def walk(command, path):
        subcommands = getattr(command, "commands", None)
        if subcommands is None:
            yield path, command
            return
        for name, sub in subcommands.items():
            yield from walk(sub, [*path, name])

    return list(walk(root, []))


def _numeric_type(param) -> type | None:
    descriptor = getattr(param, "type_descriptor", None)
    annotation = getattr(descriptor, "annotation", None)
    for candidate in (annotation, *get_args(annotation)):
        if candidate is bool:
            return None
        if candidate in (int, float):
            return candidate
    return None


def _numeric_options():
    cases = []
    for program, app in (("integrity", integrity_app), ("typing-game", game_app)):
        root = command_of(app)
        for param in root.params:  # global options
            if _numeric_type(param):
                cases.append((program, [], param))
        for path, command in _commands(app):
            for param in command.params:
                if _numeric_type(param):
                    cases.append((program, path, param))
    return cases


NUMERIC_OPTIONS = _numeric_options()


def _case_id(case) -> str:
    program, path, param = case
    return " ".join([program, *path, param.opts[0] if param.opts else param.name])


def test_the_generator_finds_the_options_it_is_about():
    ids = {_case_id(case) for case in NUMERIC_OPTIONS}
    for expected in ("integrity probe --sample", "integrity history --limit", "integrity backup create --lock-wait",
                     "typing-game stats --history", "typing-game leaderboard --param",
                     "typing-game simulate --tests-per-player", "typing-game simulate --players"):
        assert expected in ids


@pytest.mark.parametrize("case", NUMERIC_OPTIONS, ids=_case_id)
def test_every_numeric_option_documents_both_bounds(case):
    program, path, param = case
    assert param.min is not None and param.max is not None, f"{_case_id(case)} needs min= and max="
    help_text = runner.invoke(integrity_app if program == "integrity" else game_app, [*path, "--help"]).output
    if not param.hidden:
        assert f"{param.min}<=x<={param.max}" in help_text.replace(" ", ""), help_text


def _required_arguments(command, skip) -> list[str]:
    """Valid values for every other required parameter, so the bad one is what fails."""
    args: list[str] = []
    for param in command.params:
        if param is skip or not param.required:
            continue
        value = str(param.min) if _numeric_type(param) else "20261127T030118Z-a1b2c3"
        if param.param_type_name == "argument":
            args.append(value)
        else:
            args.extend([param.opts[0], value])
    return args


def _bad_values(param) -> list[str]:
    kind = _numeric_type(param)
    values = ["1" + "0" * 30, str(-(10**30)), str(param.max + 1), str(param.min - 1)]
    if kind is int:
        values.append("1.5")
    else:
        values.extend(["nan", "inf"])
    return values


@pytest.mark.parametrize("case", NUMERIC_OPTIONS, ids=_case_id)
def test_every_numeric_option_refuses_out_of_range_values_with_exit_2(case, tmp_path, sqlite_url, monkeypatch):
    program, path, param = case
    app = integrity_app if program == "integrity" else game_app
    monkeypatch.setenv("INTEGRITY_DATABASE_URL" if program == "integrity" else "GAME_DATABASE_URL", sqlite_url)
    command = dict((tuple(p), c) for p, c in _commands(app)).get(tuple(path)) if path else None
    before = Path(sqlite_url.removeprefix("sqlite:///")).read_bytes()
    for value in _bad_values(param):
        option = param.opts[0]
        if path:
            args = [*path, *_required_arguments(command, param), f"{option}={value}"]
        else:
            args = [f"{option}={value}", "status"]
        result = runner.invoke(app, args, input="")
        shown = f"{_case_id(case)}={value}: exit {result.exit_code}\n{result.output}"
        assert result.exit_code == 2, shown
        assert "a bug" not in result.output and "Traceback" not in result.output, shown
        assert option in result.output or param.name in result.output, shown
    assert Path(sqlite_url.removeprefix("sqlite:///")).read_bytes() == before  # nothing ran


# ------------------------------------------------------------------ settings


def _numeric_settings():
    cases = []

    def walk(cls, section):
        hints = get_type_hints(cls)
        for f in fields(cls):
            hint = hints[f.name]
            if is_dataclass(hint):
                walk(hint, f"{section}__{f.name}")
            elif hint in (int, float):
                cases.append((section, f.name, hint, f))

    for name, cls in SECTIONS.items():
        walk(cls, name)
    return cases


NUMERIC_SETTINGS = _numeric_settings()


def _resolve(environ, cwd):
    return resolve_settings(environ=environ, cwd=cwd)


def _variable(section: str, key: str) -> str:
    return f"INTEGRITY_{section.upper()}__{key.upper()}"


@pytest.mark.parametrize("case", NUMERIC_SETTINGS, ids=lambda c: f"{c[0]}.{c[1]}")
def test_every_numeric_setting_has_a_documented_range(case):
    section, key, hint, spec = case
    check = spec.metadata.get("check")
    assert check is not None and getattr(check, "allowed", None), f"[{section}] {key} needs _between(low, high)"
    from integrity.settings import starter_toml

    assert f"({check.allowed})" in starter_toml()


@pytest.mark.parametrize("case", NUMERIC_SETTINGS, ids=lambda c: f"{c[0]}.{c[1]}")
def test_every_numeric_setting_refuses_odd_values_from_the_environment_and_the_file(case, tmp_path):
    section, key, hint, spec = case
    data = {"XDG_DATA_HOME": str(tmp_path / "xdg")}
    variable = _variable(section, key)
    bad = ["9000000000000000000", "1" + "0" * 30, "-9000000000000000000", "-1e300" if hint is float else "-1"]
    bad += ["1.5", "9e18"] if hint is int else ["nan", "inf", "-inf"]
    for value in bad:
        try:
            _resolve({**data, variable: value}, tmp_path)
        except ConfigInvalid as exc:
            assert variable in str(exc) and key in str(exc), str(exc)
        else:
            pytest.fail(f"{variable}={value} was accepted")
    table = "[" + section.replace("__", ".") + "]"
    for value in ["9000000000000000000", "-9000000000000000000", "1e300", "-1.5"] + (["1.5"] if hint is int else ["nan"]):
        config = tmp_path / "integrity.toml"
        config.write_text(f"{table}\n{key} = {value}\n")
        with pytest.raises(ConfigInvalid, match=key):
            _resolve(data, tmp_path)
    config.unlink()
    default = spec.default
    assert _resolve({**data, variable: str(default)}, tmp_path) is not None  # the default itself is in range


def test_an_odd_setting_is_exit_4_naming_its_key_through_the_cli(tmp_path, monkeypatch, sqlite_url):
    monkeypatch.setenv("INTEGRITY_DATABASE_URL", sqlite_url)
    for variable, value in (("INTEGRITY_AUDITS__HISTORY_RETENTION_DAYS", "9000000000000000000"),
                            ("INTEGRITY_RESTORE__SAFETY_PIN_HOURS", "100000000"),
                            ("INTEGRITY_OBJECTIVES__RPO_SECONDS", "99999999999999999999")):
        monkeypatch.setenv(variable, value)
        result = runner.invoke(integrity_app, ["status"])
        assert result.exit_code == 4, result.output
        assert f"Error: invalid value '{value}' for {variable}" in result.output
        monkeypatch.delenv(variable)


@pytest.mark.parametrize("value,why", [
    ("99999999999999d", "an interval beyond 366 days"),
    ("367d", "an interval beyond 366 days"),
    ("0 0 31 2 *", "February never has a 31st"),
    ("0 0 30 2 *", "February never has a 30th"),
    ("0 0 31 4,6,9,11 *", "none of these months has a 31st"),
    ("0 0 31 feb *", "a month by name"),
])
def test_a_schedule_that_overflows_or_never_fires_is_exit_4_in_status_and_schedule_list(value, why, tmp_path, monkeypatch, sqlite_url):
    monkeypatch.setenv("INTEGRITY_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("INTEGRITY_SCHEDULE__BACKUP", value)
    for command in (["status"], ["schedule", "list"], ["--json", "schedule", "list"]):
        result = runner.invoke(integrity_app, command)
        assert result.exit_code == 4, f"{why}: {result.output}"
        assert "INTEGRITY_SCHEDULE__BACKUP ([schedule] backup)" in result.output
        assert "a bug" not in result.output


@pytest.mark.parametrize("value", ["0 0 29 2 *", "0 0 31 * mon", "0 0 31 1-12 *", "*/5 * * * *", "366d"])
def test_schedules_that_do_fire_are_accepted(value, tmp_path, monkeypatch, sqlite_url):
    monkeypatch.setenv("INTEGRITY_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("INTEGRITY_SCHEDULE__BACKUP", value)
    result = runner.invoke(integrity_app, ["--json", "schedule", "list"])
    assert result.exit_code == 0, result.output


def test_a_cron_that_apscheduler_never_fires_is_refused_by_the_trigger_too():
    from integrity.scheduler.triggers import build_trigger

    # Day 31 and Monday together fire; but a weekday that never meets an existing day would
    # slip past the month check, so the trigger itself is asked for a first fire.
    with pytest.raises(ConfigInvalid, match="it never fires"):
        build_trigger("backup", "0 0 30 2 mon")
    assert build_trigger("backup", "0 0 31 * mon") is not None


def test_a_non_utf8_config_file_is_exit_4_naming_it(tmp_path, monkeypatch, sqlite_url):
    config = tmp_path / "integrity.toml"
    config.write_bytes(b'[database]\nurl = "\xff\xfe"\n')
    result = runner.invoke(integrity_app, ["--database-url", sqlite_url, "status"])
    assert result.exit_code == 4
    assert f"Error: config file {config} is not UTF-8 text (byte 0xff at offset 18); save it as UTF-8" in result.output


@pytest.mark.parametrize("key", ["[state]\ndir", "[backups]\nrepository", "[metrics]\npath", "[database]\nurl"])
def test_a_nul_in_a_path_or_url_setting_is_exit_4(key, tmp_path, sqlite_url):
    (tmp_path / "integrity.toml").write_text(f'{key} = "/tmp/a\\u0000b"\n')
    result = runner.invoke(integrity_app, ["--database-url", sqlite_url, "status"])
    assert result.exit_code == 4, result.output
    assert "contains a NUL character" in result.output and "a bug" not in result.output


@pytest.mark.parametrize("until", ["99999999999999d", "9999999999999999999999s", "5300w", "36501d", "9999-12-31",
                                   "9999-12-31T23:00-05:00"])
def test_pin_until_too_far_ahead_is_a_usage_error(until):
    from game_core.errors import InvalidInput
    from integrity.timeparse import parse_until

    with pytest.raises(InvalidInput, match="too far ahead"):
        parse_until(until, now=datetime(2026, 1, 1, tzinfo=timezone.utc))


def test_pin_until_within_a_century_is_accepted():
    from integrity.timeparse import parse_until

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert parse_until("36500d", now=now).year == 2125
    assert parse_until("2099-01-01", now=now).year == 2099
    assert math.isclose((parse_until("12h", now=now) - now).total_seconds(), 43200)
