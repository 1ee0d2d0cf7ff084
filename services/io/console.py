"""The console's own routes: the single page, its static files, and API docs with no CDN.

FastAPI's ``/docs`` pulls Swagger UI from a CDN; an operator's network often has no way
out, so IO replaces it with the same page served from files vendored under
``static/vendor/swagger-ui`` (the npm package swagger-ui-dist), and drops ``/redoc``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from shared import __version__

STATIC = Path(__file__).resolve().parent / "static"
CDN_DOCS = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})


def install(app: FastAPI) -> None:
    """Mount the console on an app built by AgentSpec."""
    app.router.routes[:] = [
        r for r in app.router.routes if getattr(r, "path", None) not in CDN_DOCS
    ]
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
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

    @app.get("/api/v1/console/config", tags=["console"])
    async def console_config(request: Request) -> dict[str, Any]:
        """What the page needs before sign-in: whether the lab panel exists, the version."""
        settings = request.app.state.settings
        io = request.app.state.io_settings
        return {
            "version": __version__,
            "lab_enabled": settings.lab_enabled,
            "loopback_trust": io.loopback_trust,
        }
