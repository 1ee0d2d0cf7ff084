"""Network lab: CNC and PCA emulation."""

from __future__ import annotations

from fastapi import FastAPI

from shared.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(title="CXM network lab")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "agent": "lab", "version": "0.1.0"}

    return app
