"""Property-based fuzzing of the API from its own OpenAPI document (schemathesis).

Every operation gets a bounded number of generated requests, sent with an admin
token to the real app (real ControlStore on disk).  Checks: no server error,
responses match their documented schema, status code and content type.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from scheduler.api.auth import Role
from tests.scheduler.api_fixtures import Tokens, build_app
from tests.scheduler.test_api_security import make_view

pytestmark = pytest.mark.slow

TOKENS = Tokens()
ADMIN = TOKENS.header(Role.ADMIN)
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]


# schemathesis needs the app when the module loads; its store lives in a directory
# removed when the test session ends.
STORE_DIRECTORY = tempfile.TemporaryDirectory(prefix="wattmux-fuzz-")
APP = build_app(make_view(Path(STORE_DIRECTORY.name)), TOKENS, per_minute=1e6, burst=1_000_000)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, headers=ADMIN)


SEEN: dict[str, set[int]] = {}
SEQUENCES: dict[str, set[int]] = {}


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi(case: Any) -> None:
    response = case.call_and_validate(headers=ADMIN, checks=CHECKS)
    SEEN.setdefault(f"{case.method.upper()} {case.path}", set()).add(response.status_code)


def test_fuzzing_reached_the_handlers() -> None:
    """The run above got past validation into the handlers, not only 422s."""
    documented = {
        f"{method.upper()} {path}"
        for path, item in APP.openapi()["paths"].items()
        for method in item
    }
    assert len(documented) == 26 and documented <= set(SEEN), sorted(documented - set(SEEN))
    for operation in (
        "PUT /v1/mode",
        "PUT /v1/curtail",
        "PUT /v1/overrides/{device_id}",
        "PUT /v1/policy",
        "GET /v1/decisions",
        "GET /v1/audit",
        "GET /v1/demand-response/preview",
    ):
        assert 200 in SEEN[operation], (operation, SEEN[operation])
    assert 422 in SEEN["PUT /v1/overrides/{device_id}"] | SEEN["PUT /v1/curtail"]


class ApiStateMachine(schema.as_state_machine()):  # type: ignore[misc]
    """Sequences of calls following the OpenAPI links (set an override, then end it, ...)."""

    def get_call_kwargs(self, case: Any) -> dict[str, Any]:
        return {"headers": ADMIN}

    def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
        case.validate_response(response, checks=CHECKS)
        operation = f"{case.method.upper()} {case.operation.path}"
        SEQUENCES.setdefault(operation, set()).add(response.status_code)


TestApiSequences = ApiStateMachine.TestCase
TestApiSequences.settings = settings(
    max_examples=15,
    stateful_step_count=6,
    derandomize=True,  # the same sequences every run: a failure always reproduces
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


def test_sequences_followed_the_links() -> None:
    """The state machine above ended overrides it had set (device id taken from the answer)."""
    assert 200 in SEQUENCES.get("DELETE /v1/overrides/{device_id}", set()), SEQUENCES
