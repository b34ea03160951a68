"""Archive routes: your memory as one portable zip, ``deltamem export`` / ``import`` over HTTP.

``GET /v1/memories/export`` answers the archive `build_archive` writes (the same deterministic
bytes as the CLI's, so export -> import -> export is byte-identical), with its sha256 in a
header. ``POST /v1/memories/import`` takes those bytes and answers the `ImportReport`; the whole
archive is verified before anything is written (`import_archive`), so a refused import changes
nothing. Both act for the API key's user only: another user id, or another user's archive, is a
403 whatever exists, so a key cannot probe other users' memory. The request size limit is the
server's (`BodySizeLimit`, ``--max-request-bytes``): a larger upload is a 413 before it is read.

Registered before the memories router, so that ``/v1/memories/export`` is this route and not
``GET /v1/memories/{memory_id}``.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from deltamem_agents.memory.archive import (
    Archive,
    ArchiveConflictError,
    ArchiveCorruptError,
    ArchiveError,
    ArchiveMismatchError,
    ArchiveNotFoundError,
    ImportReport,
    build_archive,
    import_archive,
    read_archive,
)
from deltamem_agents.server.auth import Principal, principal
from deltamem_agents.server.context import ServerContext, context
from deltamem_agents.server.errors import ERROR_RESPONSES, APIError
from deltamem_agents.server.schemas import ErrorResponse
from deltamem_agents.store.records import SessionKey

ZIP = "application/zip"
#: What an upload may be labelled: zip's own types, or the generic bytes type most clients default to.
UPLOAD_TYPES = frozenset({ZIP, "application/x-zip-compressed", "application/octet-stream"})
SHA256_HEADER = "X-Archive-SHA256"
SESSIONS_HEADER = "X-Archive-Sessions"
#: What the import report names as its store: the server's folder or Redis URL is not the caller's business.
STORE_NAME = "server"

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    403: {"model": ErrorResponse, "description": "another user's memory: a key acts for its own user only"},
}
_EXPORT_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "nothing to export (no such session, or the user has none)"},
}
_IMPORT_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "a damaged archive, or not a deltamem archive (nothing is written)"},
    409: {"model": ErrorResponse, "description": "another model's states (pass replay), or sessions that exist (pass force)"},
    413: {"model": ErrorResponse, "description": "the upload is over --max-request-bytes"},
    415: {"model": ErrorResponse, "description": "the upload is not labelled as a zip archive"},
}

router = APIRouter(prefix="/v1/memories", tags=["memories"], responses=_RESPONSES)

#: The CLI's option names in the library's messages, and what an HTTP caller sends instead.
_HINTS = (
    ("--replay (replay=True)", "?replay=true"),
    ("--force (force=True)", "?force=true"),
    ("with --session", "with ?session_id="),
    ("archive <bytes>", "the uploaded archive"),
)


def _archive_error(exc: ArchiveError, ctx: ServerContext) -> APIError:
    """The library's archive error as an HTTP error: its message in the API's words, without
    the server's store location."""
    message = " ".join(str(exc).split()).replace(ctx.store.location, "this server's store")
    for cli, http in _HINTS:
        message = message.replace(cli, http)
    if isinstance(exc, ArchiveCorruptError):
        return APIError(400, message, code="archive_corrupt")
    if isinstance(exc, ArchiveMismatchError):
        return APIError(409, message, type="conflict_error", code="archive_mismatch", param="replay")
    if isinstance(exc, ArchiveConflictError):
        return APIError(409, message, type="conflict_error", code="archive_conflict", param="force")
    if isinstance(exc, ArchiveNotFoundError):
        return APIError(404, message, type="not_found_error", code="nothing_to_export")
    return APIError(exc.http_status, message, code="archive")


def _wrong_user(who: Principal, what: str) -> APIError:
    return APIError(
        403, f"{what}; this API key acts for user {who.user_id!r} and reaches only that user's memory",
        type="permission_error", code="wrong_user", param="user_id",
    )


@router.get(
    "/export",
    response_class=Response,
    summary="Export your memory (sessions, states, text log) as one zip archive",
    responses={200: {"content": {ZIP: _BINARY}, "description": "the archive; its sha256 is in X-Archive-SHA256"}, **_EXPORT_ERRORS},
)
async def export_memories(
    user_id: Annotated[str | None, Query(min_length=1, max_length=128, description="yours (the default); no other")] = None,
    session_id: Annotated[str | None, Query(min_length=1, max_length=128, description="only this session")] = None,
    ctx: ServerContext = Depends(context),
    who: Principal = Depends(principal),
) -> Response:
    if user_id is not None and user_id != who.user_id:
        raise _wrong_user(who, f"cannot export user {user_id!r}'s memory")
    if session_id is not None:
        SessionKey(user_id=who.user_id, session_id=session_id)  # an invalid id is a 400 with the id rule
    textlog = ctx.memory.textlog
    try:
        data, report = await ctx.scheduler.run_io(
            lambda: build_archive(ctx.store, user_id=who.user_id, session_id=session_id, textlog=textlog)
        )
    except ArchiveError as exc:
        raise _archive_error(exc, ctx) from exc
    name = f"deltamem-{who.user_id}" + (f"-{session_id}" if session_id else "") + ".zip"  # ids need no quoting
    headers = {
        "Content-Disposition": f'attachment; filename="{name}"',
        SHA256_HEADER: report.sha256,
        SESSIONS_HEADER: str(len(report.sessions)),
    }
    return Response(data, media_type=ZIP, headers=headers)


@router.post(
    "/import",
    response_model=ImportReport,
    summary="Import an archive of your memory (from GET /v1/memories/export or `deltamem export`)",
    responses=_IMPORT_ERRORS,
    openapi_extra={"requestBody": {"required": True, "content": {ZIP: _BINARY, "application/octet-stream": _BINARY}}},
)
async def import_memories(
    request: Request,
    replay: Annotated[
        bool, Query(description="re-write each state from its messages with this server's model (another backbone or adapter)")
    ] = False,
    force: Annotated[bool, Query(description="replace your sessions that already exist")] = False,
    ctx: ServerContext = Depends(context),
    who: Principal = Depends(principal),
) -> ImportReport:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in UPLOAD_TYPES:
        raise APIError(
            415, f"send the archive's bytes as the body with 'Content-Type: {ZIP}' (got {kind or 'no Content-Type'!r})",
            code="unsupported_media_type",
        )
    data = await request.body()  # at most --max-request-bytes: BodySizeLimit refused larger with 413
    if not data:
        raise APIError(400, f"the request body is empty: send the archive's bytes ('Content-Type: {ZIP}')", code="archive_corrupt")
    claimed = request.headers.get(SHA256_HEADER)
    if claimed is not None and claimed.strip().lower() != hashlib.sha256(data).hexdigest():
        raise APIError(
            400, f"the upload's sha256 differs from its {SHA256_HEADER} header: it was damaged on the way; nothing was imported",
            code="checksum_mismatch",
        )
    memory = ctx.memory

    def verify() -> Archive:
        return read_archive(data)

    def write(archive: Archive) -> ImportReport:
        return import_archive(archive, memory.runtime, textlog=memory.textlog, replay=replay, force=force)

    try:
        archive = await ctx.scheduler.run_io(verify)
        owner = archive.manifest.user_id
        if owner != who.user_id:
            raise _wrong_user(who, f"this archive holds user {owner!r}'s memory and cannot be imported with this key")
        report = await ctx.scheduler.run_io(lambda: write(archive))
    except ArchiveError as exc:
        raise _archive_error(exc, ctx) from exc
    return report.model_copy(update={"source": f"upload sha256:{archive.sha256}", "store": STORE_NAME})


__all__ = ["SESSIONS_HEADER", "SHA256_HEADER", "ZIP", "router"]
