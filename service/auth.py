"""API-key authentication with scopes: 401 without a valid key, 403 without the scope."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, status

from service.settings import ApiKey


class KeyRing:
    """The hashed keys; a presented key is hashed and compared in constant time."""

    def __init__(self, keys: tuple[ApiKey, ...]) -> None:
        self._keys = keys

    def find(self, presented: str) -> ApiKey | None:
        """The key matching ``presented``; every stored digest is compared, match or not."""
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for key in self._keys:
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found


def _presented(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.headers.get("x-api-key") or None


def require(scope: str) -> Callable[[Request], Coroutine[Any, Any, ApiKey]]:
    """A dependency that admits callers holding ``scope``."""

    async def check(request: Request) -> ApiKey:
        ring: KeyRing = request.app.state.keyring
        presented = _presented(request)
        key = ring.find(presented) if presented else None
        if key is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="a valid API key is required (Authorization: Bearer <key>)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if scope not in key.scopes:
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                detail=f"this key lacks the {scope!r} scope")
        request.state.caller = key.name
        return key

    return check
