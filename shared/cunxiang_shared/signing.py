"""Command signatures: Ed25519 over a canonical JSON form (docs/protocol.md §9).

Shared by the server (signs) and the speaker agent (verifies), so it imports only the standard
library and `cryptography`. The canonical form is RFC 8785 (JSON Canonicalization Scheme)
restricted to what commands contain: object keys sorted, no whitespace, strings escaped
minimally, numbers in their shortest round-trip form with integral values written as integers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# Fields a signature adds to a command; everything else (including `to` and `key_id`) is signed.
SIG_FIELD = "sig"
KEY_ID_FIELD = "key_id"
TO_FIELD = "to"
# Bytes prepended to the canonical form before signing, so a command signature can never be
# mistaken for a signature over anything else this key might one day sign.
DOMAIN = b"cx/v1 command\n"


class SignatureError(ValueError):
    """A command that fails verification; `reason` is a short machine-readable word."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# ---------------------------------------------------------------- canonical JSON


def _number(value: int | float) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        raise ValueError("NaN and infinities cannot be signed")
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    if "e" in text:  # ECMAScript writes 1e-7 and 1e+21, Python 1e-07 and 1e+21
        mantissa, exponent = text.split("e")
        sign = "-" if exponent.startswith("-") else "+"
        text = f"{mantissa}e{sign}{int(exponent.lstrip('+-'))}"
    return text


def _encode(value: object, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True or value is False:
        out.append("true" if value else "false")
    elif isinstance(value, int | float):
        out.append(_number(value))
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, Mapping):
        out.append("{")
        for index, key in enumerate(sorted(value, key=lambda k: k.encode("utf-16-be"))):
            if not isinstance(key, str):
                raise ValueError("object keys must be strings")
            if index:
                out.append(",")
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":")
            _encode(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise ValueError(f"cannot canonicalise {type(value).__name__}")


def canonical(message: Mapping[str, object]) -> bytes:
    """The canonical UTF-8 JSON of a command without its `sig` field: what is signed."""
    out: list[str] = []
    _encode({k: v for k, v in message.items() if k != SIG_FIELD}, out)
    return "".join(out).encode()


# ---------------------------------------------------------------- keys


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of the SHA-256 of the raw 32-byte public key."""
    return hashlib.sha256(public_bytes(public_key)).hexdigest()[:16]


def public_bytes(public_key: Ed25519PublicKey) -> bytes:
    """The raw 32 bytes of a public key."""
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def b64url(data: bytes) -> str:
    """base64url without padding (RFC 4648 §5)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    """Decode base64url with or without padding; raise ValueError unless it is the one canonical
    encoding of its bytes.

    `base64.urlsafe_b64decode` skips characters outside the alphabet and ignores the unused low
    bits of the last character (a 64-byte signature's last character carries 2 bits: 16 characters
    decode to the same bytes). Only the text that `b64url` writes for those bytes is accepted, so
    a signature has exactly one spelling (docs/protocol.md §9).
    """
    if not isinstance(text, str) or not text.isascii():
        raise ValueError("not base64url")
    unpadded = text.rstrip("=")
    if len(text) - len(unpadded) != (-len(unpadded) % 4 if text != unpadded else 0):
        raise ValueError("not base64url: wrong padding")
    try:
        data = base64.urlsafe_b64decode(unpadded + "=" * (-len(unpadded) % 4))
    except binascii.Error:
        raise ValueError("not base64url") from None
    if b64url(data) != unpadded:
        raise ValueError("not the canonical base64url encoding")
    return data


def public_key_text(public_key: Ed25519PublicKey) -> str:
    """`ed25519:` + base64url of the raw key: one line, as speakers are configured with."""
    return "ed25519:" + b64url(public_bytes(public_key))


def parse_public_key(text: str) -> Ed25519PublicKey:
    """Read `ed25519:BASE64URL` (or bare base64url / PEM) into a public key; ValueError if not one."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("PEM key is not an Ed25519 public key")
        return key
    raw = unb64url(text.removeprefix("ed25519:"))
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def read_public_keys(lines: Iterable[str]) -> list[Ed25519PublicKey]:
    """Public keys from a trusted-keys file: one per line, `#` comments and blank lines ignored."""
    keys = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            keys.append(parse_public_key(line))
    return keys


# ---------------------------------------------------------------- sign and verify


@dataclass(frozen=True)
class Signer:
    """Signs commands with one private key."""

    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> Signer:
        """A signer with a fresh random key (tests and `cunxiang keys generate`)."""
        return cls(Ed25519PrivateKey.generate())

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def sign(self, message: Mapping[str, object], topics: Iterable[str]) -> dict[str, object]:
        """The message with `to` (the topics it may arrive on), `key_id` and `sig` added."""
        signed: dict[str, object] = {k: v for k, v in message.items() if k != SIG_FIELD}
        signed[TO_FIELD] = sorted(set(topics))
        signed[KEY_ID_FIELD] = self.key_id
        signed[SIG_FIELD] = b64url(self.private_key.sign(DOMAIN + canonical(signed)))
        return signed


class Verifier:
    """Checks command signatures against the trusted server keys (current and previous)."""

    def __init__(self, keys: Iterable[Ed25519PublicKey]) -> None:
        self.keys = {key_id(k): k for k in keys}

    def verify(self, message: Mapping[str, object], topic: str) -> None:
        """Raise SignatureError unless the message is signed by a trusted key for this topic."""
        sig = message.get(SIG_FIELD)
        if sig is None:
            raise SignatureError("unsigned", "command has no signature")
        kid = message.get(KEY_ID_FIELD)
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise SignatureError("unknown_key", f"signed by a key this speaker does not trust: {kid!r}")
        try:
            # Canonical and unpadded: the one spelling Signer.sign writes.
            signature = unb64url(sig)  # type: ignore[arg-type]
            if b64url(signature) != sig:
                raise ValueError("sig is padded")
            key.verify(signature, DOMAIN + canonical(message))
        except (ValueError, TypeError, InvalidSignature):
            raise SignatureError("bad_signature", "signature does not match the command") from None
        to = message.get(TO_FIELD)
        if not isinstance(to, list) or topic not in to:
            raise SignatureError("wrong_topic", f"command was not addressed to {topic}")
