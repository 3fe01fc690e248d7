"""Every operation of the OpenAPI spec under generated input (schemathesis), as admin and anonymous.

Against a real server (uvicorn, SQLite, the embedded broker, the demo county): valid and invalid
requests made from the spec, with a fixed seed. Each must answer without a server error, with a
status the spec documents for that operation, and with a body that fits the documented schema.
The request count is printed (docs/security.md, "Generated input").
"""

from __future__ import annotations

import pytest
import requests
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.openapi import from_url
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.conftest import ADMIN

# Examples per operation and generation mode (valid, invalid): the whole module stays within
# two minutes on a 2-core machine; raise locally (CUNXIANG_FUZZ_EXAMPLES) for a longer run.
EXAMPLES = 12
SEED = 18  # fixed: the same requests on every run
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _examples() -> int:
    import os

    return int(os.environ.get("CUNXIANG_FUZZ_EXAMPLES", EXAMPLES))


def fuzz(base_url: str, token: str | None) -> tuple[int, list[str]]:
    """Run every operation; return the request count and one line per distinct failure."""
    schema = from_url(f"{base_url}/openapi.json")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = requests.Session()
    count = 0
    failures: list[str] = []
    for result in schema.get_all_operations():
        sent, found = _fuzz_operation(result.ok(), base_url, http, headers)
        count += sent
        failures += found
    return count, failures


def _fuzz_operation(operation, base_url: str, http: requests.Session, headers: dict) -> tuple[int, list[str]]:
    strategy = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )
    sent = 0
    found: dict[str, str] = {}  # one line per distinct failure of this operation

    @seed(SEED)
    @settings(
        max_examples=2 * _examples(),
        database=None,
        deadline=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: every failure is kept below
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case) -> None:
        nonlocal sent
        sent += 1
        try:
            case.call_and_validate(base_url=base_url, session=http, headers=headers, checks=CHECKS)
        except (AssertionError, FailureGroup, requests.RequestException) as exc:
            text = str(exc).strip()
            found.setdefault(f"{type(exc).__name__}:{text[:120]}", f"{operation.label}: {text[:800]}")

    run()
    return sent, list(found.values())


@pytest.mark.slow
@pytest.mark.parametrize("who", ["admin", "anonymous"])
def test_generated_input(server, who):
    token = server.login(*ADMIN) if who == "admin" else None
    count, failures = fuzz(server.base_url, token)
    print(f"\ngenerated input ({who}): {count} requests, {len(failures)} failures")
    assert count > 0
    assert not failures, "\n\n".join(failures)
