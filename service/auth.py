"""API-key authentication with scopes: 401 without a valid key, 403 without the scope,
429 (with Retry-After) when the key has spent its rate limit.

Keys come from ``TOUCHSTREAM_API_KEYS`` or, to rotate them without a restart, from the
file named by ``TOUCHSTREAM_API_KEYS_FILE`` (a mounted Kubernetes Secret, say): the file
is checked at most once a second and re-read when it changes. A file that cannot be
read or parsed keeps the previous keys (and is logged and counted), so a bad edit locks
nobody out.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request, status

from service.ratelimit import TokenBuckets, retry_after
from service.settings import ApiKey, parse_api_keys

log = logging.getLogger(__name__)


class KeyRing:
    """The hashed keys; a presented key is hashed and compared in constant time."""

    def __init__(self, keys: tuple[ApiKey, ...], *, path: Path | None = None,
                 check_every: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 on_reload: Callable[[bool], None] | None = None) -> None:
        self._keys = keys
        self._on_reload = on_reload
        self._path = path
        self._check_every = check_every
        self._clock = clock
        self._checked = clock()
        self._signature = self._stat()
        self.reloads = 0
        self.reload_failures = 0

    def _stat(self) -> tuple[int, int, int] | None:
        if self._path is None:
            return None
        try:
            st = self._path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def refresh(self) -> bool:
        """Re-read the keys file if it changed since it was last read; True when the
        keys changed."""
        if self._path is None:
            return False
        signature = self._stat()
        if signature is None or signature == self._signature:
            return False
        self._signature = signature
        try:
            keys = parse_api_keys(self._path.read_text(encoding="utf-8"))
            if not keys:
                raise ValueError("no keys in it")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            self.reload_failures += 1
            if self._on_reload is not None:
                self._on_reload(False)
            log.error("API keys file %s: %s; the previous keys stay in force", self._path,
                      exc)
            return False
        self._keys = keys
        self.reloads += 1
        if self._on_reload is not None:
            self._on_reload(True)
        log.info("API keys reloaded from %s: %d keys (%s)", self._path, len(keys),
                 ", ".join(k.name for k in keys))
        return True

    def find(self, presented: str) -> ApiKey | None:
        """The key matching ``presented``; every stored digest is compared, match or not."""
        if self._path is not None and self._clock() - self._checked >= self._check_every:
            self._checked = self._clock()
            self.refresh()
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
        limiter: TokenBuckets | None = request.app.state.limiter
        if limiter is not None:
            wait = limiter.take(key.name)
            if wait > 0:
                request.app.state.metrics.rate_limited.labels(key.name).inc()
                raise HTTPException(
                    status.HTTP_429_TOO_MANY_REQUESTS,
                    detail=f"key {key.name!r} is over its rate limit "
                           f"({limiter.rate:g} requests/s, bursts of {limiter.burst})",
                    headers={"Retry-After": retry_after(wait)})
        request.state.caller = key.name
        return key

    return check
