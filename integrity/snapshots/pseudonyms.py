"""Stable pseudonyms for the columns the game's model marks personal.

The marking lives in one place: `info={"personal": True}` on a column of
`game_core.schema` (today `players.username`). `personal_columns()` reads it from there.

A pseudonym is a keyed HMAC-SHA256 of the original, drawn in the original's shape so that a
migration behaves on the sanitised copy as on live:

- the same length (a `VARCHAR(n)` limit, a narrowing to `VARCHAR(4)`, `LENGTH()` filters
  count the same rows);
- per character the same class: a lower-case ASCII letter for a lower-case one, upper case
  for upper case, a digit for a digit, one of `_ . -` for one of them; any other character
  (non-ASCII, spaces, symbols) becomes a lower-case letter. Valid usernames stay valid;
- drawn from the ASCII-lower-cased original and then given the original's case, so two
  names equal but for case (`Bob`, `bob`) get pseudonyms equal but for case: a unique index
  on `lower(username)` fails or passes on the copy exactly as on live;
- distinct for distinct originals (collisions are redrawn), and never equal to any
  original, so every unique constraint still holds and the UPDATE that swaps them in never
  meets a value it has not replaced yet.

The key is random per export unless one is given: without it a pseudonym cannot be tied
back to a name by hashing candidates. With a configured key the same name gets the same
pseudonym in every export, except in the rare case where its first draws collide with
another name present in one export and not the other.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from game_core.errors import PreconditionFailed

PERSONAL = "personal"  # the key of Column.info that marks a column personal

LOWER = "abcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"
PUNCTUATION = "_.-"
_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", LOWER)
# Random draws before the remaining candidates of a small shape are enumerated in order.
RANDOM_DRAWS = 64
# A shape with more candidates than this is never enumerated (its draws cannot all collide).
ENUMERABLE = 1_000_000


class PseudonymsExhausted(PreconditionFailed):
    """Too many distinct values of one short shape for distinct pseudonyms of that shape."""


@dataclass(frozen=True)
class PersonalColumn:
    table: str
    column: str
    length: int | None  # the declared limit in characters, None when unbounded

    @property
    def name(self) -> str:
        return f"{self.table}.{self.column}"


def personal_columns(metadata=None) -> tuple[PersonalColumn, ...]:
    """The columns marked `info={"personal": True}` in `metadata` (default: the game's
    model), in table order. A marked key or non-text column is a mistake in the model: a
    pseudonym may only replace text that nothing refers to (keys stay untouched)."""
    import sqlalchemy as sa

    if metadata is None:
        from game_core.schema import metadata

    referenced = {fk.column for table in metadata.tables.values() for fk in table.foreign_keys}
    found = []
    for table in metadata.sorted_tables:
        for column in table.columns:
            if not column.info.get(PERSONAL):
                continue
            if column.primary_key or column.foreign_keys or column in referenced:
                raise ValueError(f"{table.name}.{column.name} is marked personal but is a key; "
                                 "pseudonyms replace only text that no key refers to")
            if not isinstance(column.type, sa.String):
                raise ValueError(f"{table.name}.{column.name} is marked personal but is not text ({column.type})")
            found.append(PersonalColumn(table.name, column.name, column.type.length))
    return tuple(found)


def fold(value: str) -> str:
    """ASCII lower case: what SQLite's lower() does, and the part of PostgreSQL's that
    valid usernames use."""
    return value.translate(_FOLD)


def _alphabet(character: str) -> str:
    if character.isascii() and character.isdigit():
        return DIGITS
    if character in PUNCTUATION:
        return PUNCTUATION
    return LOWER  # a letter (drawn lower case, cased afterwards) or anything else


def _stream(key: bytes, folded: str, attempt: int, size: int) -> bytes:
    blocks = []
    for block in range((size + 31) // 32):
        message = f"{attempt}\x00{block}\x00{folded}".encode("utf-8", "surrogatepass")
        blocks.append(hmac.new(key, message, hashlib.sha256).digest())
    return b"".join(blocks)[:size]


def _draw(key: bytes, folded: str, attempt: int, alphabets: list[str]) -> str:
    stream = _stream(key, folded, attempt, len(alphabets))
    return "".join(alphabet[byte % len(alphabet)] for alphabet, byte in zip(alphabets, stream))


def _with_case_of(original: str, folded_pseudonym: str) -> str:
    return "".join(
        p.upper() if o.isascii() and o.isupper() else p for o, p in zip(original, folded_pseudonym)
    )


def pseudonyms(values: Iterable[str], key: bytes) -> dict[str, str]:
    """{original: pseudonym} for every distinct value in `values` (see the module)."""
    originals = set(values)
    folded_originals = {fold(v) for v in originals}
    chosen: dict[str, str] = {}  # folded original -> folded pseudonym
    taken: set[str] = set()
    for folded in sorted(folded_originals):  # sorted: the same values give the same map
        if not folded:
            chosen[folded] = folded  # an empty value says nothing about anyone
            continue
        alphabets = [_alphabet(c) for c in folded]
        candidate = next(
            (c for c in (_draw(key, folded, attempt, alphabets) for attempt in range(RANDOM_DRAWS))
             if c not in taken and c not in folded_originals),
            None,
        )
        if candidate is None:
            candidate = _first_free(alphabets, taken | folded_originals)
        if candidate is None:
            raise PseudonymsExhausted(
                f"the values of {len(folded)} character(s) shaped like one of them are too many for distinct "
                "pseudonyms of that length and shape; the snapshot cannot be sanitised without changing lengths"
            )
        taken.add(candidate)
        chosen[folded] = candidate
    return {original: _with_case_of(original, chosen[fold(original)]) for original in originals}


def _first_free(alphabets: list[str], excluded: set[str]) -> str | None:
    size = 1
    for alphabet in alphabets:
        size *= len(alphabet)
        if size > ENUMERABLE:
            return None  # 64 draws from a space this large all colliding: not by chance
    return next(
        (c for c in ("".join(p) for p in itertools.product(*alphabets)) if c not in excluded), None
    )
