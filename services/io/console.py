"""The console's own routes: the single page, its static files, and API docs with no CDN.

FastAPI's ``/docs`` pulls Swagger UI from a CDN; an operator's network often has no way
out, so IO replaces it with the same page served from files vendored under
``static/vendor/swagger-ui`` (the npm package swagger-ui-dist), and drops ``/redoc``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

from shared import __version__
from shared.agent import Access, RouteAuth

CONSOLE_PAGE = RouteAuth(
    Access.OPEN,
    "the console's page and files hold no data: a browser loads them before signing in, and "
    "everything they show comes from /api/v1, which asks for a user token",
)

STATIC = Path(__file__).resolve().parent / "static"
CDN_DOCS = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})


class ConsoleFiles(StaticFiles):
    """The console's static files, with the two headers its ES modules need.

    A browser runs ``<script type="module">`` only when served a JavaScript content type, and
    Python's guess comes from the host's MIME tables (some map ``.js`` to ``text/plain``), so
    IO states it. The console's own files are revalidated on every load (``no-cache``: a 304
    when unchanged), so after an upgrade a page never mixes old and new modules.
    """

    route_auth = CONSOLE_PAGE

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        name = os.fspath(full_path)
        if name.endswith((".js", ".mjs")):
            response.headers["content-type"] = "text/javascript; charset=utf-8"
        if not Path(name).is_relative_to(STATIC / "vendor"):
            response.headers["cache-control"] = "no-cache"
        return response


def install(app: FastAPI) -> None:
    """Mount the console on an app built by AgentSpec."""
    app.router.routes[:] = [
        r for r in app.router.routes if getattr(r, "path", None) not in CDN_DOCS
    ]
    app.mount("/static", ConsoleFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False, dependencies=[CONSOLE_PAGE.depends])
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False, dependencies=[CONSOLE_PAGE.depends])
    async def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url="/static/vendor/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/static/vendor/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
        )

    @app.get("/api/v1/console/config", tags=["console"], dependencies=[CONSOLE_PAGE.depends])
    async def console_config(request: Request) -> dict[str, Any]:
        """What the page needs before sign-in: whether the lab panel exists, the version."""
        settings = request.app.state.settings
        io = request.app.state.io_settings
        return {
            "version": __version__,
            "lab_enabled": settings.lab_enabled,
            "loopback_trust": io.loopback_trust,
        }
