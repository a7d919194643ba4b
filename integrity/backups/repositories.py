"""The configured repositories by name: `primary` ([backups] repository) and its copies
(`[[repositories]]`), each opened as either kind with the same signing and checks."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timezone

from game_core.errors import InvalidInput
from integrity.settings import PRIMARY_REPOSITORY, Settings, schedule_seconds


def repository_names(settings: Settings) -> list[str]:
    return [PRIMARY_REPOSITORY, *(entry.name for entry in settings.repositories)]


def settings_for(settings: Settings, name: str) -> Settings:
    """The settings as if `name` were the repository: every command (drill, verify, list)
    then works on a copy unchanged."""
    if name == PRIMARY_REPOSITORY:
        return settings
    for entry in settings.repositories:
        if entry.name == name:
            return replace(settings, backups=replace(settings.backups, repository=entry.location, s3=entry.s3))
    configured = ", ".join(repository_names(settings))
    raise InvalidInput(f"no repository named {name!r}; configured: {configured} (add copies as [[repositories]] "
                       "in integrity.toml)")


def open_repository(settings: Settings, name: str = PRIMARY_REPOSITORY):
    """The repository `name` (a Repository or an ObjectRepository: the same interface)."""
    from integrity.backups.repository import Repository

    return Repository.of(settings_for(settings, name))


def repository_in_turn(settings: Settings, now: datetime | None = None) -> str:
    """The repository the scheduled drill rehearses now: each in rotation, one per slot of
    the [schedule] drill interval (a day for a cron expression), so a copy nobody restores
    from is proven as often as the primary."""
    names = repository_names(settings)
    slot = schedule_seconds(settings.schedule.drill) or 86400
    moment = (now or datetime.now(timezone.utc)).timestamp()
    return names[int(moment // slot) % len(names)]


@dataclass(frozen=True)
class RepositoryReading:
    """One repository's catalogue of a database's backups, or why it could not be read."""

    name: str
    location: str
    remote: bool  # on object storage, off this host
    catalog: object | None  # integrity.backups.catalog.Catalog of the database; None with a problem
    problem: str | None = None  # the repository cannot be read (missing, unreachable)


def read_repositories(settings: Settings, identity: str | None, now: datetime,
                      names: list[str] | None = None) -> list[RepositoryReading]:
    """The catalogue of the backups of the database `identity` in each repository of
    `names` (default: every one, the primary first), each read once: a repository that
    is missing or unreachable is reported, not raised. Status, the metrics and the report
    read them through here."""
    from game_core.errors import Failure
    from integrity.backups.catalog import read_catalog

    found = []
    for name in repository_names(settings) if names is None else names:
        location = str(settings_for(settings, name).backups.repository)
        remote = location.startswith("s3://")
        try:
            repository = open_repository(settings, name)
            if not repository.exists():
                found.append(RepositoryReading(name, location, remote, None,
                                               f"no repository at {location}: run `integrity init`"))
                continue
            catalog = read_catalog(repository, now).of_store(identity)
        except Failure as exc:
            found.append(RepositoryReading(name, location, remote, None, str(exc)))
            continue
        found.append(RepositoryReading(name, location, remote, catalog))
    return found


@dataclass(frozen=True)
class Freshness:
    """One repository's newest restorable backup of a database (status, metrics)."""

    name: str
    location: str
    remote: bool
    newest: object | None  # integrity.backups.catalog.BackupInfo
    problem: str | None = None  # the repository cannot be read (missing, unreachable)

    @classmethod
    def of(cls, reading: RepositoryReading) -> Freshness:
        newest = reading.catalog.newest_restorable() if reading.catalog is not None else None
        return cls(reading.name, reading.location, reading.remote, newest, reading.problem)


def newest_good_per_repository(settings: Settings, identity: str | None, now: datetime,
                               names: list[str] | None = None) -> list[Freshness]:
    """The repositories of `names` (default: every one, the primary first); a caller that
    has read the primary already names the copies alone (`copy_names`)."""
    return [Freshness.of(reading) for reading in read_repositories(settings, identity, now, names)]


def copy_names(settings: Settings) -> list[str]:
    """The [[repositories]] copies, without the primary."""
    return [entry.name for entry in settings.repositories]


def all_repositories(settings: Settings) -> list[tuple[str, object]]:
    return [(name, open_repository(settings, name)) for name in repository_names(settings)]
