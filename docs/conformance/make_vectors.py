"""Write docs/conformance/vectors.json: signed commands and reports, each with the outcome it must get.

Run from the repository root with the project's environment: `python docs/conformance/make_vectors.py`.
Ed25519 is deterministic and the key is the published test key (docs/protocol.md §9.4), so the
file comes out the same every time; tests/agent/test_conformance.py checks that it does, and that
the agent and the server's parser give every vector its outcome.
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cunxiang_shared.signing import Signer, public_key_text

OUT = Path(__file__).with_name("vectors.json")
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
TOPIC = "cx/v1/area/341225100201/cmd"
DEVICE_TOPIC = "cx/v1/dev/fn-0101-01/cmd"
NOW = "2025-06-01T00:26:00.000Z"  # the speaker's clock when each command arrives, unless a vector says
LATE = "2025-06-01T00:45:00.000Z"  # after every command's expires_at

SET_VOLUME = {
    "v": 1,
    "cmd_id": "3f2c9b1e8a7d4c6f9e0b1a2c3d4e5f60",
    "issued_at": "2025-06-01T00:25:00.000Z",
    "expires_at": "2025-06-01T00:30:00.000Z",
    "type": "set_volume",
    "volume": 60,
}
PLAY = {
    "v": 1,
    "cmd_id": "a1b2c3d4e5f60718293a4b5c6d7e8f90",
    "issued_at": "2025-06-01T00:25:00.000Z",
    "type": "play",
    "occurrence_id": 4711,
    "broadcast_id": 128,
    "title": "防汛通知",
    "audio_url": "https://cx.example.gov.cn/media/a.mp3",
    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "size_bytes": 412334,
    "duration_s": 68.7,
    "start_at": "2025-06-01T00:30:00.000Z",
    "expires_at": "2025-06-01T00:40:00.000Z",
    "priority": 30,
    "volume": None,
}
STOP_ALL = {
    "v": 1,
    "cmd_id": "5c0f7a1e2b3d4c5f6a7b8c9d0e1f2a3b",
    "issued_at": "2025-06-01T00:25:00.000Z",
    "expires_at": "2025-06-01T00:30:00.000Z",
    "type": "stop",
    "occurrence_id": None,
}


def _sign(message: dict, topic: str = TOPIC, key: Ed25519PrivateKey = KEY) -> dict:
    return Signer(key).sign(message, [topic])


def _text(message: dict) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def commands() -> list[dict]:
    good = _sign(SET_VOLUME)
    sig = good["sig"]
    # The same 64 bytes under another last character (the unused low bits differ): not canonical.
    twin = sig[:-1] + ("B" if sig[-1] == "A" else "A")
    v: list[dict] = []

    def add(name: str, payload: str, outcome: str, **extra: object) -> None:
        v.append({"name": name, "topic": TOPIC, "now": NOW, **extra, "payload": payload, "outcome": outcome})

    add("set_volume as published (the §9.4 vector)", _text(good), "accepted")
    add(
        "the same, other member order and spacing",
        json.dumps(dict(reversed(good.items())), indent=1),
        "accepted",
    )
    add("play", _text(_sign(PLAY)), "accepted")
    add(
        "play after its expires_at: accepted, then reported skipped",
        _text(_sign(PLAY)),
        "accepted",
        now=LATE,
        then={"report": {"occurrence_id": 4711, "state": "skipped"}},
    )
    add("stop with occurrence_id null", _text(_sign(STOP_ALL)), "accepted")
    add("sent to the device topic", _text(_sign(SET_VOLUME, DEVICE_TOPIC)), "accepted", topic=DEVICE_TOPIC)
    add("without v (version 1)", _text(_sign({k: x for k, x in SET_VOLUME.items() if k != "v"})), "accepted")
    # malformed: parsed before anything else, so the signature does not matter (these are signed)
    add("volume as a string", _text(_sign({**SET_VOLUME, "volume": "60"})), "malformed")
    add("volume true", _text(_sign({**SET_VOLUME, "volume": True})), "malformed")
    add("volume 60.0 (not an integer)", _text(_sign({**SET_VOLUME, "volume": 60.0})), "malformed")
    add("v true", _text(_sign({**SET_VOLUME, "v": True})), "malformed")
    add("v 2", _text(_sign({**SET_VOLUME, "v": 2})), "malformed")
    add("occurrence_id as a string", _text(_sign({**PLAY, "occurrence_id": "4711"})), "malformed")
    add("time without offset", _text(_sign({**SET_VOLUME, "issued_at": "2025-06-01T00:25:00"})), "malformed")
    add(
        "time with a space for T",
        _text(_sign({**SET_VOLUME, "issued_at": "2025-06-01 00:25:00Z"})),
        "malformed",
    )
    add("time as a number", _text(_sign({**SET_VOLUME, "issued_at": 1748737500})), "malformed")
    add("repeated member", _text(good).replace('"volume":60', '"volume":60,"volume":100'), "malformed")
    for name in ("cmd_id", "issued_at", "expires_at"):
        add(f"no {name}", _text(_sign({k: x for k, x in SET_VOLUME.items() if k != name})), "malformed")
    add("unknown type", _text(_sign({**SET_VOLUME, "type": "reboot"})), "malformed")
    add("cmd_id of 7 characters", _text(_sign({**SET_VOLUME, "cmd_id": "abcdefg"})), "malformed")
    add("over 16,384 bytes", _text(_sign({**SET_VOLUME, "padding": "x" * 16400})), "malformed")
    add("malformed and unsigned: malformed wins", _text({**SET_VOLUME, "volume": "60"}), "malformed")
    # signature checks, in this order: unsigned, unknown_key, bad_signature, wrong_topic
    add("no sig", _text({k: x for k, x in good.items() if k != "sig"}), "unsigned")
    add("no sig, no key_id, no to: unsigned wins", _text(SET_VOLUME), "unsigned")
    add("no key_id", _text({k: x for k, x in good.items() if k != "key_id"}), "unknown_key")
    add("signed by an untrusted key", _text(_sign(SET_VOLUME, key=OTHER_KEY)), "unknown_key")
    add(
        "untrusted key under a trusted key_id",
        _text({**_sign(SET_VOLUME, key=OTHER_KEY), "key_id": good["key_id"]}),
        "bad_signature",
    )
    add("no to (it was signed)", _text({k: x for k, x in good.items() if k != "to"}), "bad_signature")
    add("volume changed after signing", _text({**good, "volume": 100}), "bad_signature")
    add("sig with a non-canonical last character", _text({**good, "sig": twin}), "bad_signature")
    add("sig with padding", _text({**good, "sig": sig + "=="}), "bad_signature")
    add("sig not base64url", _text({**good, "sig": "*" * 86}), "bad_signature")
    add("sig a number", _text({**good, "sig": 12}), "bad_signature")
    add("arrived on a topic not in to", _text(good), "wrong_topic", topic="cx/v1/area/341225000000/cmd")
    add("set_volume after its expires_at", _text(good), "expired", now=LATE)
    add("handled before, still valid", _text(good), "duplicate", handled=[SET_VOLUME["cmd_id"]])
    add(
        "handled before, now expired: expired, not duplicate",
        _text(good),
        "expired",
        now=LATE,
        handled=[SET_VOLUME["cmd_id"]],
    )
    add("play handled before", _text(_sign(PLAY)), "duplicate", handled=[PLAY["cmd_id"]])
    return v


REPORT = {
    "v": 1,
    "device_id": "fn-0101-01",
    "occurrence_id": 4711,
    "state": "played",
    "at": "2025-06-01T00:31:08.712Z",
    "seconds_played": 68.7,
    "error": None,
}


def reports() -> list[dict]:
    v: list[dict] = []

    def add(name: str, payload: str, outcome: str) -> None:
        v.append({"name": name, "payload": payload, "outcome": outcome})

    add("played", _text(REPORT), "accepted")
    add(
        "received, optional fields absent, no v",
        _text({k: REPORT[k] for k in ("device_id", "occurrence_id", "at")} | {"state": "received"}),
        "accepted",
    )
    add("at with an offset", _text({**REPORT, "at": "2025-06-01T08:31:08+08:00"}), "accepted")
    add("seconds_played an integer", _text({**REPORT, "seconds_played": 68}), "accepted")
    add("an unknown member is ignored", _text({**REPORT, "battery": 0.9}), "accepted")
    add(
        "error mentions a member name",
        _text({**REPORT, "state": "failed", "error": 'player said "state": x'}),
        "accepted",
    )
    add("occurrence_id as a string", _text({**REPORT, "occurrence_id": "4711"}), "malformed")
    add("occurrence_id true", _text({**REPORT, "occurrence_id": True}), "malformed")
    add("occurrence_id 4711.0", _text({**REPORT, "occurrence_id": 4711.0}), "malformed")
    add("occurrence_id 0", _text({**REPORT, "occurrence_id": 0}), "malformed")
    add("occurrence_id 2^31", _text({**REPORT, "occurrence_id": 2**31}), "malformed")
    add(
        "state repeated",
        _text(REPORT).replace('"state":"played"', '"state":"failed","state":"played"'),
        "malformed",
    )
    add(
        "state repeated, spelt with an escape",
        _text(REPORT).replace('"state":"played"', '"state":"failed","st\\u0061te":"played"'),
        "malformed",
    )
    add("state unknown", _text({**REPORT, "state": "done"}), "malformed")
    add(
        "state no_report (the server's, not a speaker's)",
        _text({**REPORT, "state": "no_report"}),
        "malformed",
    )
    add("no at", _text({k: x for k, x in REPORT.items() if k != "at"}), "malformed")
    add("at without offset", _text({**REPORT, "at": "2025-06-01T00:31:08.712"}), "malformed")
    add("at without seconds", _text({**REPORT, "at": "2025-06-01T00:31Z"}), "malformed")
    add("at in 1970", _text({**REPORT, "at": "1970-01-01T00:00:00Z"}), "malformed")
    add("seconds_played negative", _text({**REPORT, "seconds_played": -1}), "malformed")
    add("seconds_played as a string", _text({**REPORT, "seconds_played": "68.7"}), "malformed")
    add("v 2", _text({**REPORT, "v": 2}), "malformed")
    add("error of 501 characters", _text({**REPORT, "error": "e" * 501}), "malformed")
    add("error of 500 Chinese characters (1,500 bytes)", _text({**REPORT, "error": "错" * 500}), "accepted")
    add("device_id with a slash", _text({**REPORT, "device_id": "a/b"}), "malformed")
    add("over 4,096 bytes", _text({**REPORT, "padding": "x" * 4100}), "malformed")
    add("NaN", _text(REPORT).replace("68.7", "NaN"), "malformed")
    add("not an object", "[1,2]", "malformed")
    return v


def vectors() -> dict:
    return {
        "about": (
            "cunxiang wire protocol v1 conformance vectors (docs/protocol.md §12). Commands: the speaker "
            "trusts `trusted_keys`, its clock reads `now`, it has already handled the cmd_ids in `handled`; "
            "the command arrives on `topic` as the UTF-8 bytes of `payload`; `outcome` is accepted, "
            "duplicate, or the refusal reason it must count. Reports: the server parses `payload` (the UTF-8 "
            "bytes) and must accept it or refuse it as malformed."
        ),
        "trusted_keys": [public_key_text(KEY.public_key())],
        "commands": commands(),
        "reports": reports(),
    }


def render() -> str:
    return json.dumps(vectors(), ensure_ascii=False, indent=1) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
