from __future__ import annotations

import stat
from datetime import timedelta

import jwt
import pytest

from core import auth
from core.auth import InvalidToken

SECRET = "s" * 64


def test_password_hash_roundtrip():
    hashed = auth.hash_password("正确的密码 correct horse")
    assert hashed.startswith("$argon2id$")
    assert "correct horse" not in hashed
    assert auth.verify_password("正确的密码 correct horse", hashed)
    assert not auth.verify_password("wrong password", hashed)
    assert auth.hash_password("same") != auth.hash_password("same")  # salted


def test_malformed_hash_never_matches():
    assert not auth.verify_password("anything", "not-a-hash")
    assert not auth.verify_password("anything", "")


def test_token_roundtrip():
    token = auth.create_access_token(subject="alice", role="staff", version=0, secret=SECRET, minutes=30)
    claims = auth.decode_access_token(token, SECRET)
    assert (claims.subject, claims.role) == ("alice", "staff")
    assert timedelta(minutes=29) < claims.expires_at - claims.issued_at <= timedelta(minutes=30)
    assert claims.expires_at.tzinfo is not None


def test_token_with_wrong_secret_is_rejected():
    token = auth.create_access_token(subject="alice", role="admin", version=0, secret=SECRET, minutes=30)
    with pytest.raises(InvalidToken):
        auth.decode_access_token(token, "t" * 64)


def test_expired_token_is_rejected():
    token = auth.create_access_token(subject="alice", role="admin", version=0, secret=SECRET, minutes=-1)
    with pytest.raises(InvalidToken, match="expired"):
        auth.decode_access_token(token, SECRET)


def test_tampered_and_garbage_tokens_are_rejected():
    token = auth.create_access_token(subject="alice", role="staff", version=0, secret=SECRET, minutes=30)
    header, payload, signature = token.split(".")
    forged = jwt.encode({"sub": "alice", "role": "admin", "iat": 0, "exp": 2**31}, SECRET + "x")
    for bad in ["", "abc", f"{header}.{payload}.{signature[:-2]}xx", forged]:
        with pytest.raises(InvalidToken):
            auth.decode_access_token(bad, SECRET)


def test_unsigned_and_roleless_tokens_are_rejected():
    unsigned = jwt.encode({"sub": "alice", "role": "admin", "iat": 0, "exp": 2**31}, None, algorithm="none")
    with pytest.raises(InvalidToken):
        auth.decode_access_token(unsigned, SECRET)
    roleless = jwt.encode({"sub": "alice", "ver": 0, "iat": 0, "exp": 2**31}, SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken, match="role"):
        auth.decode_access_token(roleless, SECRET)


def test_tokens_without_a_version_are_rejected():
    """Tokens issued before token versions existed (or forged without one) cannot be revoked: refused."""
    versionless = jwt.encode({"sub": "1", "role": "admin", "iat": 0, "exp": 2**31}, SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken):
        auth.decode_access_token(versionless, SECRET)
    for bad in ("1", True, None):
        token = jwt.encode(
            {"sub": "1", "role": "admin", "ver": bad, "iat": 0, "exp": 2**31}, SECRET, algorithm="HS256"
        )
        with pytest.raises(InvalidToken, match="ver"):
            auth.decode_access_token(token, SECRET)


def test_secret_is_created_once_with_mode_0600(tmp_path):
    data_dir = tmp_path / "var"
    secret = auth.load_or_create_secret(data_dir)
    path = data_dir / auth.SECRET_FILE
    assert len(secret) >= 43
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert auth.load_or_create_secret(data_dir) == secret
    assert auth.load_or_create_secret(tmp_path / "other") != secret


def test_loose_secret_file_is_tightened(tmp_path):
    path = tmp_path / auth.SECRET_FILE
    path.write_text("my-configured-secret\n")
    path.chmod(0o644)
    assert auth.load_or_create_secret(tmp_path) == "my-configured-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
