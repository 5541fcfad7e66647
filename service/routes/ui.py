"""The live page at ``/`` and ``/ui``: static HTML, CSS, JS and SVG shipped in the package.

The page and its assets are served without a key: they hold no data. In the browser the
page asks for a read key and reads the same ``/v1/...`` API as any other client. Nothing
is fetched from another origin; the Content-Security-Policy says so to the browser too.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

router = APIRouter(tags=["ui"], include_in_schema=False)

_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
"""Every file the page is made of; nothing else under ``static/`` is served."""

_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
           "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

_HEADERS = {
    "Content-Security-Policy": _POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@functools.cache
def _asset(name: str) -> tuple[bytes, str]:
    """A static file's bytes and its ETag, read once from the installed package."""
    body = resources.files("service").joinpath("static", name).read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _serve(request: Request, name: str) -> Response:
    body, etag = _asset(name)
    headers = {**_HEADERS, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=_TYPES[name], headers=headers)


@router.get("/")
@router.get("/ui")
async def page(request: Request) -> Response:
    """The live page: scores against targets, alerts, trends, pulses and journeys."""
    return _serve(request, "index.html")


@router.get("/ui/{name}")
async def asset(name: str, request: Request) -> Response:
    """The page's script, style sheet and icon."""
    if name not in _TYPES or name == "index.html":
        raise HTTPException(404, detail=f"no such file {name!r}")
    return _serve(request, name)
