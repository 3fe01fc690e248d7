"""Command signatures: the canonical form, the published test vector, what a speaker refuses, keys on disk."""

from __future__ import annotations

import json
import os
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cunxiang_shared import protocol
from cunxiang_shared.signing import (
    SignatureError,
    Signer,
    Verifier,
    canonical,
    public_key_text,
    read_public_keys,
)
from devices import commands, keys
from devices.transport import MemoryLink

# The test vector of docs/protocol.md §9.4: private key = bytes 0x00..0x1f.
VECTOR_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
VECTOR_PUBLIC = "ed25519:A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg"
VECTOR_KEY_ID = "56475aa75463474c"
VECTOR_TOPIC = "cx/v1/area/341225100201/cmd"
VECTOR_COMMAND = {
    "v": 1,
    "cmd_id": "3f2c9b1e8a7d4c6f9e0b1a2c3d4e5f60",
    "issued_at": "2025-06-01T00:25:00.000Z",
    "expires_at": "2025-06-01T00:30:00.000Z",
    "type": "set_volume",
    "volume": 60,
}
VECTOR_CANONICAL = (
    '{"cmd_id":"3f2c9b1e8a7d4c6f9e0b1a2c3d4e5f60","expires_at":"2025-06-01T00:30:00.000Z",'
    '"issued_at":"2025-06-01T00:25:00.000Z","key_id":"56475aa75463474c",'
    '"to":["cx/v1/area/341225100201/cmd"],"type":"set_volume","v":1,"volume":60}'
)
VECTOR_SIG = "HuD6XfJCa48FRf_Tioq1EiW0GuASgeqRqQo8K5zPqNY7QEtY0s3XT3AvEt6zaae_0aCnfcqHEBg9awFnegyHAA"


def test_published_test_vector() -> None:
    signer = Signer(VECTOR_KEY)
    assert public_key_text(signer.public_key) == VECTOR_PUBLIC
    assert signer.key_id == VECTOR_KEY_ID
    signed = signer.sign(VECTOR_COMMAND, [VECTOR_TOPIC])
    assert canonical(signed).decode() == VECTOR_CANONICAL
    assert signed["sig"] == VECTOR_SIG
    Verifier(read_public_keys([VECTOR_PUBLIC])).verify(signed, VECTOR_TOPIC)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({"b": 1, "a": 2}, '{"a":2,"b":1}'),
        ({"x": [1.0, 0.2, 1e-7, 3, 68.7, -0.0]}, '{"x":[1,0.2,1e-7,3,68.7,0]}'),
        ({"t": '防汛\n"q"\u0001'}, '{"t":"防汛\\n\\"q\\"\\u0001"}'),
        ({"n": None, "f": False, "d": {"z": {}, "y": []}}, '{"d":{"y":[],"z":{}},"f":false,"n":null}'),
        ({"sig": "dropped", "a": 1}, '{"a":1}'),
    ],
)
def test_canonical_form(value: dict, text: str) -> None:
    assert canonical(value).decode() == text


def test_canonical_form_is_the_same_whatever_the_wire_spacing() -> None:
    signed = Signer(VECTOR_KEY).sign(VECTOR_COMMAND, [VECTOR_TOPIC])
    spaced = json.dumps(signed, indent=2, ensure_ascii=True).encode()  # \u escapes, newlines, order kept
    Verifier([VECTOR_KEY.public_key()]).verify(json.loads(spaced), VECTOR_TOPIC)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda m: m.pop("sig"), "unsigned"),
        (lambda m: m.update(volume=100), "bad_signature"),
        (lambda m: m.update(sig=m["sig"][:-4] + "AAAA"), "bad_signature"),
        (lambda m: m.update(sig="***not base64***"), "bad_signature"),
        (lambda m: m.update(sig=12), "bad_signature"),
        (lambda m: m.update(key_id="0000000000000000"), "unknown_key"),
        (lambda m: m.update(to=["cx/v1/area/341225000000/cmd"]), "bad_signature"),
    ],
)
def test_verifier_refuses(mutate, reason: str) -> None:
    message = Signer(VECTOR_KEY).sign(VECTOR_COMMAND, [VECTOR_TOPIC])
    mutate(message)
    with pytest.raises(SignatureError) as info:
        Verifier([VECTOR_KEY.public_key()]).verify(message, VECTOR_TOPIC)
    assert info.value.reason == reason


def test_a_command_signed_for_one_topic_is_refused_on_another() -> None:
    message = Signer(VECTOR_KEY).sign(VECTOR_COMMAND, [VECTOR_TOPIC])
    with pytest.raises(SignatureError) as info:
        Verifier([VECTOR_KEY.public_key()]).verify(message, "cx/v1/area/341225100202/cmd")
    assert info.value.reason == "wrong_topic"


def test_forged_key_is_refused_even_with_the_right_key_id() -> None:
    forger = Signer.generate()
    message = forger.sign(VECTOR_COMMAND, [VECTOR_TOPIC])
    message["key_id"] = VECTOR_KEY_ID
    from cunxiang_shared.signing import DOMAIN, b64url

    message["sig"] = b64url(forger.private_key.sign(DOMAIN + canonical(message)))
    with pytest.raises(SignatureError) as info:
        Verifier([VECTOR_KEY.public_key()]).verify(message, VECTOR_TOPIC)
    assert info.value.reason == "bad_signature"


def test_the_sender_signs_for_its_topics_and_splits_when_too_big() -> None:
    signer = Signer.generate()
    link = MemoryLink()
    sender = commands.CommandSender(link=link, signer=signer)
    topics = [protocol.device_topic(f"speaker-{n:05d}-with-a-long-name", "cmd") for n in range(900)]
    assert sender.send(protocol.StopCommand(occurrence_id=7), topics) == 900
    verifier = Verifier([signer.public_key])
    assert [t for t, _ in link.published] == topics
    for topic, raw in link.published:
        assert len(raw) <= protocol.MAX_COMMAND_BYTES
        data = json.loads(raw)
        verifier.verify(data, topic)
        assert protocol.command_from(data).occurrence_id == 7
    assert len({raw for _, raw in link.published}) > 1  # split into several signed payloads


def test_a_command_signed_by_the_sender_is_refused_by_a_speaker_that_trusts_another_key() -> None:
    link = MemoryLink()
    commands.CommandSender(link=link, signer=Signer.generate()).send(
        protocol.StopCommand(occurrence_id=7), ["cx/v1/dev/x/cmd"]
    )
    ((topic, raw),) = link.published
    with pytest.raises(SignatureError) as info:
        Verifier([Signer.generate().public_key]).verify(json.loads(raw), topic)
    assert info.value.reason == "unknown_key"


def test_key_files_generate_stage_rotate(tmp_path) -> None:
    first, created = keys.generate(tmp_path)
    assert created and not keys.generate(tmp_path)[1]
    private = keys.keys_dir(tmp_path) / keys.CURRENT
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(keys.keys_dir(tmp_path)).st_mode) == 0o700
    staged = keys.stage(tmp_path)
    assert [role for role, _ in staged.trusted()] == ["current", "next"]
    old_signer = first.signer()
    rotated = keys.rotate(tmp_path)
    assert [role for role, _ in rotated.trusted()] == ["current", "previous"]
    assert rotated.signer().key_id == Signer(staged.next).key_id  # the staged key took over
    # A speaker given the trusted-keys file accepts both the new and the previous key.
    trusted = read_public_keys((keys.keys_dir(tmp_path) / keys.TRUSTED).read_text().splitlines())
    verifier = Verifier(trusted)
    for signer in (old_signer, rotated.signer()):
        verifier.verify(signer.sign(VECTOR_COMMAND, [VECTOR_TOPIC]), VECTOR_TOPIC)
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600


def test_only_the_canonical_spelling_of_a_signature_is_accepted() -> None:
    # A lenient base64url decoder ignores the unused low bits of the last character: every other
    # character that decodes to the same 64 bytes must be refused, by the agent and the server alike.
    import base64

    from cunxiang_shared.signing import unb64url

    signed = Signer(VECTOR_KEY).sign(VECTOR_COMMAND, [VECTOR_TOPIC])
    sig = signed["sig"]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twins = [
        sig[:-1] + c
        for c in alphabet
        if c != sig[-1]
        and base64.urlsafe_b64decode(sig[:-1] + c + "==") == base64.urlsafe_b64decode(sig + "==")
    ]
    assert len(twins) == 15  # 4 unused bits: what a lenient decoder would take
    for twin in [*twins, sig[:40] + "!" + sig[40:]]:
        with pytest.raises(ValueError, match="base64url"):
            unb64url(twin)
    # A signature is written without padding: the padded one is refused too.
    for twin in [*twins, sig[:40] + "!" + sig[40:], sig + "=="]:
        with pytest.raises(SignatureError) as info:
            Verifier([VECTOR_KEY.public_key()]).verify({**signed, "sig": twin}, VECTOR_TOPIC)
        assert info.value.reason == "bad_signature"
    Verifier([VECTOR_KEY.public_key()]).verify(signed, VECTOR_TOPIC)
    assert unb64url(VECTOR_PUBLIC.removeprefix("ed25519:") + "=") == unb64url(VECTOR_PUBLIC[8:])
