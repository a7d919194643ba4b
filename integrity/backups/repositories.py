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
class Freshness:
    """One repository's newest restorable backup of a database (status, metrics, report)."""

    name: str
    location: str
    remote: bool
    newest: object | None  # integrity.backups.catalog.BackupInfo
    problem: str | None = None  # the repository cannot be read (missing, unreachable)


def newest_good_per_repository(settings: Settings, identity: str | None, now: datetime) -> list[Freshness]:
    """Every repository, the primary first: an unreachable copy is reported, not raised."""
    from game_core.errors import Failure
    from integrity.backups.catalog import read_catalog

    found = []
    for name in repository_names(settings):
        location = str(settings_for(settings, name).backups.repository)
        remote = location.startswith("s3://")
        try:
            repository = open_repository(settings, name)
            if not repository.exists():
                found.append(Freshness(name, location, remote, None,
                                       f"no repository at {location}: run `integrity init`"))
                continue
            newest = read_catalog(repository, now).of_store(identity).newest_restorable()
        except Failure as exc:
            found.append(Freshness(name, location, remote, None, str(exc)))
            continue
        found.append(Freshness(name, location, remote, newest))
    return found


def all_repositories(settings: Settings) -> list[tuple[str, object]]:
    return [(name, open_repository(settings, name)) for name in repository_names(settings)]
