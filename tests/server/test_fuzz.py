"""Fuzzing the HTTP API from its own OpenAPI schema (schemathesis): whatever the body, headers,
query or path, valid for the schema or not, the server never answers 5xx, and every answer has a
status, content type and body that the schema documents."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

OPERATIONS = [
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/models"),
    ("GET", "/health"),
    ("GET", "/v1/sessions"),
    ("GET", "/v1/sessions/{session_id}"),
    ("DELETE", "/v1/sessions/{session_id}"),
    ("POST", "/v1/sessions/{session_id}/ingest"),
    ("POST", "/v1/sessions/{session_id}/forget"),
    ("POST", "/v1/sessions/{session_id}/search"),
    ("GET", "/v1/sessions/{session_id}/state"),
    ("POST", "/v1/memories"),
    ("GET", "/v1/memories"),
    ("GET", "/v1/memories/{memory_id}"),
    ("PATCH", "/v1/memories/{memory_id}"),
    ("DELETE", "/v1/memories/{memory_id}"),
    ("GET", "/v1/memories/{memory_id}/history"),
    ("POST", "/v1/memories/reset"),
    ("POST", "/v1/memories/prune"),
    ("GET", "/v1/memories/retention"),
    ("PUT", "/v1/memories/retention"),
    ("GET", "/v1/memories/export"),
    ("POST", "/v1/memories/import"),
]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def api_schema(make_app):
    app = make_app(textlog=True, default_max_tokens=2, max_tokens=4)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_every_operation_is_fuzzed(api_schema):
    served = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert served == set(OPERATIONS)


CASES = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
    for method, path in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if path != "/health" or mode is GenerationMode.POSITIVE  # /health takes no input to get wrong
]


@pytest.mark.parametrize("method, path, mode", CASES)
def test_no_input_makes_the_server_fail(api_schema, method, path, mode):
    operation = api_schema[path][method]
    chat = path == "/v1/chat/completions" and mode is GenerationMode.POSITIVE

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=40 if chat else 15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
        database=None,
    )
    def check(case):
        if chat and isinstance(case.body, dict):
            # a served model and no length or n the server refuses anyway: random conversations,
            # tools, stops, sampling options and session ids reach the model
            case.body["model"] = "deltamem"
            for refused in ("max_tokens", "max_completion_tokens", "n", "logprobs"):
                case.body.pop(refused, None)
        case.call_and_validate(checks=CHECKS)

    check()
