"""Who is asking: bearer API keys map to user ids, and a user id scopes every session.

The session store is keyed by ``(user_id, session_id)``, so a key only ever reaches its own
user's sessions: another user's session id simply does not exist for it (404, not 403, so a key
cannot even probe which ids others use). Without configured keys (loopback only, see
`ServerSettings`), every request acts as ``anonymous_user``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from deltamem_agents.server.errors import APIError
from deltamem_agents.store.records import validate_id

_bearer = HTTPBearer(auto_error=False, description="an API key of this server (see --api-keys-file)")


class Principal(BaseModel):
    """The caller: the user whose sessions it may see, and a short non-secret key tag for logs."""

    user_id: str
    key_tag: str | None = None


class Authenticator:
    """Checks bearer tokens in constant time against every configured key."""

    def __init__(self, api_keys: Mapping[str, str], anonymous_user: str) -> None:
        self._keys = [(key.encode(), user) for key, user in api_keys.items()]
        self.anonymous_user = validate_id("user_id", anonymous_user)

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def authenticate(self, token: str | None) -> Principal:
        if not self._keys:
            return Principal(user_id=self.anonymous_user)
        if not token:
            raise _unauthorized("missing API key: send the header 'Authorization: Bearer YOUR_KEY'")
        given = token.encode()
        user = None
        for key, owner in self._keys:  # no early exit: the time taken says nothing about the keys
            if hmac.compare_digest(given, key):
                user = owner
        if user is None:
            raise _unauthorized("wrong API key: check the key, or ask the server's operator for one")
        return Principal(user_id=user, key_tag=hashlib.sha256(given).hexdigest()[:8])


def _unauthorized(message: str) -> APIError:
    return APIError(
        401, message, type="authentication_error", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}
    )


async def principal(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Principal:
    """FastAPI dependency: the caller of this request (401 when a key is needed and not valid)."""
    authenticator: Authenticator = request.app.state.authenticator
    if credentials is None and request.headers.get("authorization") and authenticator.required:
        raise _unauthorized("the Authorization header must be 'Bearer YOUR_KEY'")
    return authenticator.authenticate(credentials.credentials if credentials else None)


__all__ = ["Authenticator", "Principal", "principal"]
