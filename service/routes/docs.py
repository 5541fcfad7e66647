"""The API docs at ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), served from installed
files so they work without internet.

FastAPI's own pages load Swagger UI and ReDoc from a CDN and start them with inline
scripts. Here the two libraries come from the ``fastapi-offline`` package on PyPI (MIT;
it ships ``swagger-ui-bundle.js``/``swagger-ui.css`` of swagger-ui-dist, Apache-2.0, and
``redoc.standalone.js``, MIT), and the pages and their start-up scripts from
``service/apidocs/``. Nothing is fetched from another origin, and the
Content-Security-Policy says so: scripts only from this server. Swagger UI sets inline
styles and ReDoc injects style elements and runs its search in a blob: worker, which
the policy allows, for these two pages only (the live page keeps its stricter policy).
ReDoc's one remote reference, the Redocly logo beside "API docs by Redocly", is pointed
at an empty ``data:`` image when the file is read (the logo hides itself; the credit
stays), so the browser neither asks the CDN nor reports a refused request.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

router = APIRouter(tags=["docs"], include_in_schema=False)

_OURS = {
    "swagger.html": "text/html; charset=utf-8",
    "redoc.html": "text/html; charset=utf-8",
    "swagger-init.js": "text/javascript; charset=utf-8",
    "redoc-init.js": "text/javascript; charset=utf-8",
}
_LIBRARY = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
}
"""Every file the two pages are made of; nothing else is served."""

POLICY = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
          "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
          "worker-src blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

_REDOCLY_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"

_HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@functools.cache
def _file(name: str) -> tuple[bytes, str]:
    """A file's bytes and ETag, read once from the installed packages."""
    if name in _OURS:
        body = resources.files("service").joinpath("apidocs", name).read_bytes()
    else:
        body = resources.files("fastapi_offline").joinpath("static", name).read_bytes()
        body = body.replace(_REDOCLY_LOGO, b"data:,")
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _serve(request: Request, name: str, media_type: str) -> Response:
    body, etag = _file(name)
    headers = {**_HEADERS, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


@router.get("/docs")
async def swagger(request: Request) -> Response:
    """Swagger UI over ``/openapi.json``: try the API from the browser."""
    return _serve(request, "swagger.html", _OURS["swagger.html"])


@router.get("/redoc")
async def redoc(request: Request) -> Response:
    """ReDoc over ``/openapi.json``: the API reference as one page."""
    return _serve(request, "redoc.html", _OURS["redoc.html"])


@router.get("/docs/assets/{name}")
async def asset(name: str, request: Request) -> Response:
    """The two pages' scripts and style sheet."""
    media_type = _LIBRARY.get(name) or (_OURS.get(name) if name.endswith(".js") else None)
    if media_type is None:
        raise HTTPException(404, detail=f"no such file {name!r}")
    return _serve(request, name, media_type)
