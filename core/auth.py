"""Authentication primitives: argon2 password hashes and HS256 bearer tokens."""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
from pwdlib import PasswordHash
from pwdlib.exceptions import PwdlibError
from pwdlib.hashers.argon2 import Argon2Hasher

from core.clock import utcnow

log = logging.getLogger(__name__)

ALGORITHM = "HS256"
SECRET_FILE = "secret_key"  # inside the data directory, mode 0600
SECRET_BYTES = 48  # 64 url-safe characters; HS256 wants at least 32 bytes of key

_hasher = PasswordHash((Argon2Hasher(),))


class InvalidToken(Exception):
    """A bearer token that is malformed, wrongly signed, expired or missing claims."""


@dataclass(frozen=True)
class TokenClaims:
    """The verified content of an access token."""

    subject: str
    role: str
    version: int  # the user's token_version when issued: refused once the user's has moved on
    issued_at: datetime
    expires_at: datetime


def hash_password(password: str) -> str:
    """Return an argon2id hash of `password`."""
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    """True if `password` matches `password_hash`; a malformed hash never matches."""
    try:
        return _hasher.verify(password, password_hash)
    except PwdlibError:
        return False


def verify_and_update(password: str, password_hash: str) -> tuple[bool, str | None]:
    """Like verify_password, plus a new hash when the stored one uses outdated parameters."""
    try:
        return _hasher.verify_and_update(password, password_hash)
    except PwdlibError:
        return False, None


def create_access_token(*, subject: str, role: str, version: int, secret: str, minutes: int) -> str:
    """Return a signed token for `subject` with `role` and token `version`, valid for `minutes`."""
    now = utcnow()
    claims = {
        "sub": subject,
        "role": role,
        "ver": version,
        "iat": now,
        "exp": now + timedelta(minutes=minutes),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_access_token(token: str, secret: str) -> TokenClaims:
    """Verify `token` and return its claims; raise InvalidToken otherwise."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp", "iat", "ver"]}
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc
    role = claims.get("role")
    if not isinstance(role, str) or not role:
        raise InvalidToken("token has no role")
    version = claims["ver"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise InvalidToken("token has no version")
    return TokenClaims(
        subject=claims["sub"],
        role=role,
        version=version,
        issued_at=datetime.fromtimestamp(claims["iat"], UTC),
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
    )


def load_or_create_secret(data_dir: Path | str) -> str:
    """Return the token-signing secret kept in `data_dir`, creating a random one (mode 0600)."""
    path = Path(data_dir) / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass  # made earlier, or by a concurrent process: read it below
    else:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secrets.token_urlsafe(SECRET_BYTES) + "\n")
        log.info("created a new token-signing secret in %s", path)
    if path.stat().st_mode & 0o077:
        log.warning("%s was readable by others; restricting it to mode 0600", path)
        path.chmod(0o600)
    secret = path.read_text(encoding="ascii").strip()
    if not secret:
        raise ValueError(f"{path} is empty; delete it to have a new secret generated")
    return secret
