"""One root for every error the SDK raises on purpose.

Faces (CLI, HTTP server, MCP tools) catch :class:`DeltaMemError` once instead of listing each
module's errors. A :class:`UserError` is the caller's to fix (a bad id, a damaged file, a wrong
option): it carries the HTTP status and the CLI exit code it maps to, so every face answers it
the same way. Anything else under the root is the environment's (a server that does not answer,
an extra that is not installed). Each module keeps its own error names, rooted here; most also
keep the builtin base they always had (``ValueError``, ``TimeoutError``), so ``except ValueError``
in user code goes on working.

Nothing here imports anything: every layer may use it.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ConflictError",
    "DeltaMemError",
    "NotFoundError",
    "UnavailableError",
    "UserError",
    "exit_code_of",
    "http_status_of",
]


class DeltaMemError(Exception):
    """Root of the SDK's errors. ``http_status`` and ``exit_code`` say how faces report it."""

    #: what the HTTP server answers (500: the server's fault, unless a branch says otherwise)
    http_status: ClassVar[int] = 500
    #: what the CLI exits with
    exit_code: ClassVar[int] = 1


class UserError(DeltaMemError):
    """The caller's input is wrong; the message names the problem and, where it can, the fix."""

    http_status: ClassVar[int] = 400
    exit_code: ClassVar[int] = 2


class NotFoundError(UserError):
    """The named thing (session, entry, file, model) does not exist."""

    http_status: ClassVar[int] = 404


class ConflictError(UserError):
    """The request collides with the current state (an existing session, a lost lease, a busy lock)."""

    http_status: ClassVar[int] = 409


class UnavailableError(DeltaMemError):
    """Something the SDK needs is not there right now (a server, an optional extra, a model file)."""

    http_status: ClassVar[int] = 503


def http_status_of(exc: BaseException) -> int:
    """The HTTP status an exception maps to (500 for anything outside the SDK's errors)."""
    return exc.http_status if isinstance(exc, DeltaMemError) else 500


def exit_code_of(exc: BaseException) -> int:
    """The CLI exit code an exception maps to (1 for anything outside the SDK's errors)."""
    return exc.exit_code if isinstance(exc, DeltaMemError) else 1
