"""The server's command-signing keys, kept in `{data_dir}/keys/` (private key files mode 0600).

- `command-signing.pem`           the current private key: every command is signed with it
- `command-signing.next.pem`      a staged key (`cunxiang keys rotate --stage`), trusted by speakers
                                  before it signs anything
- `command-signing.previous.pub`  the key the current one replaced; speakers keep trusting it
                                  until commands it signed have expired

Rotation without a gap: stage, push the trusted-keys file (`cunxiang keys show`) to the speakers,
then rotate (the staged key becomes current). See docs/agent.md.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from core import errors
from cunxiang_shared.signing import Signer, key_id, parse_public_key, public_key_text

CURRENT = "command-signing.pem"
NEXT = "command-signing.next.pem"
PREVIOUS = "command-signing.previous.pub"
TRUSTED = "trusted-keys.txt"  # what speakers need; rewritten on every change


class KeyStoreError(errors.CunxiangError):
    """A key operation that cannot be done; the subclass says which kind."""


class KeyUnavailable(KeyStoreError, errors.Unavailable):
    """No current signing key, or a key file that is not one: nothing can be signed."""


class KeyStateConflict(KeyStoreError, errors.Conflict):
    """Stage or rotate at the wrong moment: no current key yet, or a key already staged."""


def keys_dir(data_dir: Path) -> Path:
    """Where the keys live."""
    return Path(data_dir) / "keys"


def _write_private(path: Path, key: Ed25519PrivateKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def _read_private(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyUnavailable(f"{path} is not an Ed25519 private key", reason="bad_key")
    return key


@dataclass(frozen=True)
class KeySet:
    """The server's keys as they are on disk."""

    current: Ed25519PrivateKey | None
    next: Ed25519PrivateKey | None
    previous: Ed25519PublicKey | None

    def signer(self) -> Signer:
        """A signer with the current key; KeyUnavailable when there is none."""
        if self.current is None:
            raise KeyUnavailable("no command-signing key: run `cunxiang keys generate`", reason="no_key")
        return Signer(self.current)

    def trusted(self) -> list[tuple[str, Ed25519PublicKey]]:
        """(role, public key) of every key a speaker should trust: current, next, previous."""
        out: list[tuple[str, Ed25519PublicKey]] = []
        if self.current is not None:
            out.append(("current", self.current.public_key()))
        if self.next is not None:
            out.append(("next", self.next.public_key()))
        if self.previous is not None:
            out.append(("previous", self.previous))
        return out

    def trusted_file(self) -> str:
        """The trusted-keys file speakers are given (`cunxiang agent --server-keys FILE`)."""
        lines = ["# cunxiang server command-signing keys; one per line"]
        lines += [f"{public_key_text(k)}  # {role} {key_id(k)}" for role, k in self.trusted()]
        return "\n".join(lines) + "\n"


def load(data_dir: Path) -> KeySet:
    """Read whatever keys exist."""
    d = keys_dir(data_dir)
    current = _read_private(d / CURRENT) if (d / CURRENT).exists() else None
    staged = _read_private(d / NEXT) if (d / NEXT).exists() else None
    previous = parse_public_key((d / PREVIOUS).read_text()) if (d / PREVIOUS).exists() else None
    return KeySet(current, staged, previous)


def _publish_trusted(data_dir: Path) -> KeySet:
    keyset = load(data_dir)
    path = keys_dir(data_dir) / TRUSTED
    path.write_text(keyset.trusted_file())
    os.chmod(path, 0o644)
    return keyset


def generate(data_dir: Path) -> tuple[KeySet, bool]:
    """Create the current key if there is none; return the keys and whether one was created."""
    path = keys_dir(data_dir) / CURRENT
    if path.exists():
        return _publish_trusted(data_dir), False
    _write_private(path, Ed25519PrivateKey.generate())
    return _publish_trusted(data_dir), True


def load_or_create(data_dir: Path) -> KeySet:
    """The keys, creating the current one on first start (what `cunxiang serve` does)."""
    return generate(data_dir)[0]


def stage(data_dir: Path) -> KeySet:
    """Create the next key (trusted by speakers from now on, signing nothing yet)."""
    d = keys_dir(data_dir)
    if not (d / CURRENT).exists():
        raise KeyStateConflict("no current key to rotate from: run `cunxiang keys generate`", reason="no_key")
    if (d / NEXT).exists():
        raise KeyStateConflict(f"a key is already staged ({d / NEXT}); rotate to it first", reason="staged")
    _write_private(d / NEXT, Ed25519PrivateKey.generate())
    return _publish_trusted(data_dir)


def rotate(data_dir: Path) -> KeySet:
    """Make the staged key (or a new one) current; the old current becomes the previous key."""
    d = keys_dir(data_dir)
    if not (d / CURRENT).exists():
        raise KeyStateConflict("no current key to rotate from: run `cunxiang keys generate`", reason="no_key")
    old = _read_private(d / CURRENT)
    (d / PREVIOUS).write_text(public_key_text(old.public_key()) + "\n")
    if (d / NEXT).exists():
        (d / NEXT).replace(d / CURRENT)
    else:
        _write_private(d / CURRENT, Ed25519PrivateKey.generate())
    with contextlib.suppress(FileNotFoundError):
        os.chmod(d / CURRENT, 0o600)
    return _publish_trusted(data_dir)
