"""The demo chat pages and the browser client, served at ``GET /``, ``GET /aisdk`` and
``GET /web/<file>``.

The files live in the repository's ``clients/web/`` (``index.html``, ``app.js``,
``tokenwire.js``, ``style.css``; plain ES modules, no build step; ``aisdk.html`` and
``aisdk.js``, the page on the AI SDK's own chat transports, import ``vendor/ai.mjs``, a bundle
that ``tests/node/vendor_web.py`` builds from the pinned ``ai`` package). A wheel carries them
inside the package as ``tokenwire/web/`` (``force-include`` in pyproject.toml); a source checkout or
an editable install, whose package is ``server/tokenwire``, finds them at ``clients/web``
two levels up. :func:`web_root` tries the two in that order; ``TOKENWIRE_WEB_DIR`` (the
``web_dir`` setting) overrides both, e.g. to serve a customised page.

When no directory has ``index.html``, ``GET /`` answers 404 ``not_found`` with a message that
says so; the API routes are unaffected.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from tokenwire.edge.responses import error_response
from tokenwire.errors import NotFound

_PACKAGE = Path(__file__).resolve().parent
CANDIDATES = (_PACKAGE / "web", _PACKAGE.parent.parent / "clients" / "web")


def web_root(override: str | Path | None = None) -> Path | None:
    """The directory with the page's files, or ``None`` if there is none."""
    candidates = (Path(override),) if override else CANDIDATES
    for candidate in candidates:
        if (candidate / "index.html").is_file():
            return candidate
    return None


def web_routes(override: str | Path | None = None) -> list[BaseRoute]:
    """``GET /`` (the page) and ``/web`` (its scripts and styles)."""
    root = web_root(override)
    if root is None:
        where = str(override) if override else " or ".join(str(c) for c in CANDIDATES)
        message = f"the demo page is not installed (no index.html in {where})"

        async def missing(request: Request) -> Response:
            return error_response(NotFound(message))

        return [Route("/", missing, methods=["GET"])]

    async def index(request: Request) -> Response:
        return FileResponse(root / "index.html", headers={"Cache-Control": "no-cache"})

    async def aisdk(request: Request) -> Response:
        return FileResponse(root / "aisdk.html", headers={"Cache-Control": "no-cache"})

    return [
        Route("/", index, methods=["GET"]),
        Route("/aisdk", aisdk, methods=["GET"]),
        Mount("/web", StaticFiles(directory=root)),
    ]
