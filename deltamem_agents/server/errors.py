"""HTTP errors: every failure reaches the client as OpenAI's ``{"error": {...}}`` with a status
that says whose fault it is (4xx: the request, 5xx: the server), and a message that names the fix.

Every error the library raises on purpose is a `DeltaMemError`; its ``http_status`` is the status
(`deltamem_agents.errors`). `LIBRARY_ERRORS` only names the OpenAI ``type`` and ``code`` of the
common ones. A `DeltaMemError` at 500 and anything outside the SDK's errors is a server bug: a
500 with a generic message (logged with its traceback), never dressed up as a client error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from deltamem_agents.errors import DeltaMemError, http_status_of
from deltamem_agents.memory.routing import RouterError
from deltamem_agents.memory.textlog import TextLogError, TextLogUnavailableError
from deltamem_agents.server.schemas import ErrorDetail, ErrorResponse
from deltamem_agents.session.session import SessionError
from deltamem_agents.session.tools import ToolSpecError
from deltamem_agents.store.base import (
    SessionConflictError,
    SessionCorruptError,
    SessionLockTimeout,
    SessionMismatchError,
    SessionNotFoundError,
)
from deltamem_agents.store.records import InvalidSessionIdError

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 1


class APIError(DeltaMemError):
    """An error with its HTTP status, raised anywhere in a request and rendered by `install`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = dict(headers or {})

    def detail(self) -> ErrorDetail:
        return ErrorDetail(message=self.message, type=self.type, param=self.param, code=self.code)


class TurnCancelled(DeltaMemError):
    """The client went away during a streamed turn; the turn commits nothing."""


#: Library exception -> (type, code) of its OpenAI error body. The first match wins: subclasses
#: come first. The status is the class's ``http_status`` (see `deltamem_agents.errors`).
LIBRARY_ERRORS: tuple[tuple[type[DeltaMemError], str, str], ...] = (
    (SessionLockTimeout, "server_busy", "session_busy"),  # 503
    (SessionNotFoundError, "not_found_error", "session_not_found"),  # 404
    (SessionMismatchError, "conflict_error", "session_mismatch"),  # 409
    (SessionConflictError, "conflict_error", "session_conflict"),  # 409
    (SessionCorruptError, "server_error", "session_corrupt"),  # 500, with its message
    (TextLogUnavailableError, "server_busy", "textlog_unavailable"),  # 503
    (InvalidSessionIdError, "invalid_request_error", "invalid_id"),  # 400
    (TextLogError, "invalid_request_error", "textlog"),  # 400
    (ToolSpecError, "invalid_request_error", "invalid_tools"),  # 400
    (RouterError, "invalid_request_error", "router"),  # 400
    (SessionError, "invalid_request_error", "invalid_conversation"),  # 400
)

#: The OpenAI ``type`` of a `DeltaMemError` that `LIBRARY_ERRORS` does not name, by status.
_TYPES = {404: "not_found_error", 409: "conflict_error", 503: "server_busy"}


def _library_error(exc: DeltaMemError) -> tuple[str, str | None] | None:
    """(type, code) of a library error, or None for one that is a server bug (500, unnamed)."""
    for kind, type_, code in LIBRARY_ERRORS:
        if isinstance(exc, kind):
            return type_, code
    status = http_status_of(exc)
    if status >= 500 and status != 503:
        return None
    return _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error"), None


def as_api_error(exc: BaseException) -> APIError | None:
    """The `APIError` for a known library error, else None (an unknown error is a server bug)."""
    if isinstance(exc, APIError):
        return exc
    if not isinstance(exc, DeltaMemError) or isinstance(exc, TurnCancelled):
        return None
    named = _library_error(exc)
    if named is None:
        return None
    type_, code = named
    status = http_status_of(exc)
    message = " ".join(str(exc).split())
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return APIError(status, message, type=type_, code=code, headers=headers)


def error_response(error: APIError) -> JSONResponse:
    body = ErrorResponse(error=error.detail()).model_dump(mode="json")
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def error_event(exc: BaseException) -> dict[str, Any]:
    """The error body for an error in the middle of a stream (the status is already sent)."""
    error = as_api_error(exc) or APIError(500, "the server failed while answering; see its log", type="server_error")
    return ErrorResponse(error=error.detail()).model_dump(mode="json")


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    parts = []
    for error in errors[:3]:
        location = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{location or 'body'}: {error.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    first = errors[0].get("loc", ()) if errors else ()
    param = ".".join(str(p) for p in first if p != "body") or None
    return "invalid request: " + "; ".join(parts) + more, param


def install(app: FastAPI) -> None:
    """Render every error of ``app`` as an `ErrorResponse`."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return error_response(
                APIError(400, "the request body is not valid JSON; send a JSON object", code="invalid_json")
            )
        message, param = _validation_message(exc)
        return error_response(APIError(422, message, code="invalid_value", param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}; see /docs for the API"
        type_ = "authentication_error" if exc.status_code == 401 else "invalid_request_error"
        return error_response(APIError(exc.status_code, detail, type=type_, headers=exc.headers))

    @app.exception_handler(DeltaMemError)
    async def _library(request: Request, exc: DeltaMemError) -> JSONResponse:
        error = as_api_error(exc)
        if error is None:  # a server bug: the message stays in the log
            error = APIError(500, "the server failed while answering; see its log", type="server_error")
        if error.status >= 500:
            logger.error("%s %s failed: %s", request.method, request.url.path, exc, exc_info=exc)
        return error_response(error)


#: Error responses documented on every route (OpenAPI), so clients and fuzzers know them.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "bad request: the message says what to change"},
    401: {"model": ErrorResponse, "description": "missing or wrong API key"},
    404: {"model": ErrorResponse, "description": "unknown session or model"},
    409: {"model": ErrorResponse, "description": "the session belongs to another model, or changed meanwhile"},
    413: {"model": ErrorResponse, "description": "over a size limit of this server"},
    422: {"model": ErrorResponse, "description": "the body does not match the schema"},
    503: {"model": ErrorResponse, "description": "busy: retry after Retry-After seconds"},
}

__all__ = ["APIError", "ERROR_RESPONSES", "LIBRARY_ERRORS", "TurnCancelled", "as_api_error", "error_event", "install"]
