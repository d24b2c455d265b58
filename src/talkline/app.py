"""The FastAPI application: routes, the web client, and the lifetime of shared resources."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from talkline.config import Settings
from talkline.resources import SharedResources
from talkline.routes import http, websocket
from talkline.sessions import SessionManager

WEB_DIST = Path(__file__).parent / "web" / "dist"


def create_app(settings: Settings) -> FastAPI:
    """Build the app; models load in the background once it starts (see ``/ready``)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.shared.start()
        try:
            yield
        finally:
            await app.state.shared.stop()

    app = FastAPI(title="talkline", lifespan=lifespan)
    app.state.settings = settings
    app.state.sessions = SessionManager(settings.max_sessions)
    app.state.shared = SharedResources(settings)
    app.include_router(http.router)
    app.include_router(websocket.router)
    if (WEB_DIST / "index.html").is_file():
        app.mount("/", StaticFiles(directory=WEB_DIST, html=True), name="web")
    else:

        @app.get("/", response_class=HTMLResponse)
        async def no_client() -> str:
            return "<h1>talkline</h1><p>The web client is not built. Connect to /ws.</p>"

    return app
