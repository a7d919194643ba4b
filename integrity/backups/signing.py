"""Signed manifests: whoever can write the repository cannot forge a backup that verifies.

Hashes prove a backup is intact, not who made it: anyone who can write the repository can
re-compress edited data (usernames changed, rows dropped), recompute every hash in the
manifest and manifest.sha256, and quick verification, deep verification and restore all
accept it (issue 14, item 13). With signing configured:

- `backup create` signs manifest.json's exact bytes with an Ed25519 private key
  (`[backups] signing_key_file`, only on the hosts that make backups, outside the
  repository, readable by its owner alone) and writes `manifest.sig` beside it before the
  backup directory is renamed into place (DESIGN invariant 2 is unchanged: the rename is
  still what makes it visible, and a signed backup is never visible unsigned);
- every read of a manifest (`Repository.read_manifest`: list, show, quick and deep verify,
  restore, drill, diff, salvage, dry runs) checks the signature against the public key in
  the configuration (`[backups] signing_public_key`), which the repository never holds:
  an unsigned or wrongly signed manifest is a corrupt backup (exit 5).

Without signing configured, unsigned backups are accepted (those made before signing
existed), and a forgery with recomputed hashes still verifies: that is the limitation
signing removes. Ed25519 through `cryptography` (OpenSSL): no home-made crypto. It is
imported only when a key is used, so `integrity --help` stays light.

`manifest.sig` is one line, `ed25519 <key id> <base64 signature>`; the key id (the first
16 hex digits of the public key's SHA-256) only makes a wrong key easy to name, the
signature alone decides.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from game_core.errors import ExitCode, PreconditionFailed
from integrity.backups.durable import fsync_directory
from integrity.errors import ConfigInvalid

SCHEME = "ed25519"
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
KEYGEN_HINT = "make a key pair with `integrity backup keygen --out PATH`"


class SigningKeyRefused(PreconditionFailed):
    """The private key file cannot be used: missing, readable by others, inside the
    repository, not an Ed25519 key, or not the pair of the configured public key."""


def key_id(public_key: bytes) -> str:
    return hashlib.sha256(public_key).hexdigest()[:16]


def encode_public_key(public_key: bytes) -> str:
    return base64.b64encode(public_key).decode("ascii")


def parse_public_key(text: str) -> bytes:
    """The raw 32-byte key from `[backups] signing_public_key` (standard base64)."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != PUBLIC_KEY_BYTES:
        raise ConfigInvalid(
            f"invalid value {text!r} for [backups] signing_public_key; allowed: the base64 Ed25519 public key "
            f"that `integrity backup keygen` prints (44 characters), or empty (signing off)"
        )
    return raw


# ------------------------------------------------------------------ verifying


@dataclass(frozen=True)
class ManifestVerifier:
    """Checks manifest.sig against the configured public key (held by Repository)."""

    public_key: bytes

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def problem(self, backup_id: str, manifest: bytes, signature: bytes | None, *, name: str = "manifest.sig") -> str | None:
        """Why the backup cannot be trusted: None when `signature` (the bytes of its
        `name` file or object; None when there is none) is this key's signature of
        `manifest`. The repository reads both (from a directory or a bucket) and calls the
        backup corrupt; this class knows only keys and signatures."""
        if signature is None:
            return (
                f"backup {backup_id} is not signed (no {name}) but signing is configured "
                f"([backups] signing_public_key, key {self.key_id}): it was not made by a holder of the signing key, "
                "or it predates signing; it is never verified or restored while signing is on"
            )
        try:
            line = signature.decode("ascii")
        except UnicodeDecodeError:
            return f"backup {backup_id}: {name} cannot be read; it cannot be trusted or restored"
        fields = line.split()
        decoded = _decode_signature(fields)
        if decoded is None:
            return f"backup {backup_id}: {name} is not a signature this tool wrote; it cannot be trusted or restored"
        if fields[1] != self.key_id:
            return (
                f"backup {backup_id} is signed by key {fields[1]}, not by the configured key {self.key_id} "
                "([backups] signing_public_key); it cannot be trusted or restored"
            )
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(decoded, manifest)
        except InvalidSignature:
            return (
                f"backup {backup_id}: {name} does not match manifest.json under the configured key {self.key_id}: "
                "the manifest was changed after it was signed (its hashes recomputed, perhaps); it cannot be trusted or restored"
            )
        return None


def _decode_signature(fields: list[str]) -> bytes | None:
    if len(fields) != 3 or fields[0] != SCHEME:
        return None
    try:
        signature = base64.b64decode(fields[2], validate=True)
    except (binascii.Error, ValueError):
        return None
    return signature if len(signature) == SIGNATURE_BYTES else None


def verifier_of(backups) -> ManifestVerifier | None:
    """The verifier for `[backups]` settings; None when signing is not configured.
    A private key without its public key is refused: backups would be signed and nobody
    would ever check them, which looks like protection and is none."""
    if not backups.signing_public_key:
        if backups.signing_key_file:
            raise ConfigInvalid(
                "[backups] signing_key_file is set but signing_public_key is not: signatures would be written and "
                "never checked; set signing_public_key to the line `integrity backup keygen` printed for that key "
                "(or remove signing_key_file)"
            )
        return None
    return ManifestVerifier(parse_public_key(backups.signing_public_key))


# ------------------------------------------------------------------ signing


@dataclass(frozen=True)
class ManifestSigner:
    """The private key, loaded only where backups are made. Never printed: no repr."""

    key_file: Path
    public_key: bytes
    _private: Any = field(repr=False, compare=False)

    def signature_file(self, manifest: bytes) -> bytes:
        """What manifest.sig holds for `manifest` (manifest.json's exact bytes)."""
        signature = self._private.sign(manifest)
        return f"{SCHEME} {key_id(self.public_key)} {base64.b64encode(signature).decode('ascii')}\n".encode("ascii")


def key_file_path(settings) -> Path | None:
    """`[backups] signing_key_file` as an absolute path (relative: to the data directory,
    like every other path in the configuration); None when this host does not sign."""
    value = settings.backups.signing_key_file
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else (settings.data_dir / path).absolute()


def signer_of(settings) -> ManifestSigner | None:
    """The signer `backup create` uses; None when signing is not configured. Refuses
    (exit 4, before anything is copied) a host that must sign and cannot, a key file
    others can read or that lives in the repository, and a key that is not the pair of
    the configured public key (its backups would all be refused)."""
    verifier = verifier_of(settings.backups)
    if verifier is None:
        return None
    path = key_file_path(settings)
    if path is None:
        raise SigningKeyRefused(
            f"signing is configured ([backups] signing_public_key, key {verifier.key_id}) but this host has no "
            "[backups] signing_key_file: its backups would be unsigned and refused; set signing_key_file to the "
            "private key on the hosts that make backups"
        )
    private = load_private_key(path, repository=settings.backups.repository)
    public = _raw_public(private)
    if public != verifier.public_key:
        raise SigningKeyRefused(
            f"the key in [backups] signing_key_file {path} (key {key_id(public)}) is not the pair of "
            f"[backups] signing_public_key (key {verifier.key_id}): its backups would all be refused; set "
            "signing_public_key to that key's public key, or signing_key_file to the right key"
        )
    return ManifestSigner(path, public, private)


def load_private_key(path: Path, *, repository: Path):
    """The Ed25519 private key in `path`, after checking where it lives and who can read it."""
    refuse_inside(path, repository, what=f"[backups] signing_key_file {path}")
    try:
        info = path.stat()
    except FileNotFoundError:
        raise SigningKeyRefused(f"[backups] signing_key_file {path} does not exist; {KEYGEN_HINT}") from None
    except OSError as exc:
        raise SigningKeyRefused(f"[backups] signing_key_file {path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise SigningKeyRefused(f"[backups] signing_key_file {path} is not a regular file; {KEYGEN_HINT}")
    if info.st_mode & 0o077:
        raise SigningKeyRefused(
            f"[backups] signing_key_file {path} is open to others (mode {stat.S_IMODE(info.st_mode):04o}): whoever "
            f"can read it can sign forged backups; run `chmod 600 {path}` (and make a new key if others read it)"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyRefused(f"[backups] signing_key_file {path} cannot be read: {exc.strerror}") from None
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        private = load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):  # never echo the library's words: they may quote the file
        private = None
    if not isinstance(private, Ed25519PrivateKey):
        raise SigningKeyRefused(
            f"[backups] signing_key_file {path} is not an unencrypted Ed25519 private key in PEM; {KEYGEN_HINT}"
        )
    return private


def refuse_inside(path: Path, repository: Path, *, what: str) -> None:
    """A key the repository holds protects nothing: whoever writes backups could sign them."""
    real, root = Path(os.path.realpath(path)), Path(os.path.realpath(repository))
    if real == root or root in real.parents:
        raise SigningKeyRefused(
            f"{what} is inside the backup repository {repository}: whoever can write backups could sign forgeries; "
            "keep the private key outside it (for example /etc/integrity/signing.key)"
        )


def _raw_public(private) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


# ------------------------------------------------------------------ backup check


def signing_finding(settings) -> tuple[str, str]:
    """`backup check`'s word on signing: (state, detail) with state ok, warn or fail."""
    backups = settings.backups
    if not backups.signing_public_key and not backups.signing_key_file:
        return "warn", (
            "not configured: anyone who can write the repository can forge a backup (data edited, hashes "
            f"recomputed) that verifies and restores; {KEYGEN_HINT} and set [backups] signing_public_key "
            "and signing_key_file"
        )
    try:
        signer = signer_of(settings)
    except (ConfigInvalid, SigningKeyRefused) as exc:
        return "fail", str(exc)
    return "ok", (
        f"Ed25519, key {key_id(signer.public_key)}: [backups] signing_key_file {signer.key_file} matches "
        "signing_public_key; new backups are signed, unsigned or wrongly signed ones are refused"
    )


# ------------------------------------------------------------------ keygen


@dataclass(frozen=True)
class GeneratedKey:
    """`integrity backup keygen`: where the private key went and the public key to configure."""

    key_file: str
    key_id: str
    public_key: str  # base64; not a secret: it only verifies

    @property
    def exit_code(self) -> int:
        return ExitCode.OK

    def summary(self) -> dict:
        return {"key_file": self.key_file, "key_id": self.key_id}

    def config_lines(self) -> list[str]:
        return [
            "[backups]",
            f'signing_public_key = "{self.public_key}"',
            f'signing_key_file = "{self.key_file}"',
        ]


def generate_key(out: Path, *, repository: Path) -> GeneratedKey:
    """A new Ed25519 key pair: the private key written to `out` (0600, created, never
    overwritten, outside the repository), the public key returned for integrity.toml."""
    out = Path(os.path.abspath(out.expanduser()))
    if out.is_dir():
        raise SigningKeyRefused(f"--out {out} is a directory; give the path of the key file to create")
    refuse_inside(out, repository, what=f"--out {out}")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    try:
        # O_EXCL: never replace a key (the backups it signed would all be refused); 0600
        # from the first byte, whatever the umask, so no one else can ever read it.
        descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SigningKeyRefused(f"--out {out} already exists; a key is never overwritten: choose another path") from None
    except OSError as exc:
        raise SigningKeyRefused(f"cannot create --out {out}: {exc.strerror}; choose a writable directory") from None
    try:
        os.fchmod(descriptor, 0o600)
        os.write(descriptor, pem)
        os.fsync(descriptor)
    except OSError as exc:
        os.close(descriptor)
        out.unlink(missing_ok=True)
        raise SigningKeyRefused(f"cannot write --out {out}: {exc.strerror}") from None
    os.close(descriptor)
    fsync_directory(out.parent)
    public = _raw_public(private)
    return GeneratedKey(key_file=str(out), key_id=key_id(public), public_key=encode_public_key(public))
