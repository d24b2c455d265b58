"""The FastAPI application: routes, the web client, and the lifetime of shared resources."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from talkline.admission import SessionManager
from talkline.auth import Access
from talkline.config import Settings
from talkline.metrics import Metrics
from talkline.resources import SharedResources
from talkline.routes import http, websocket
from talkline.slots import SlotPool

WEB_DIST = Path(__file__).parent / "web" / "dist"


def build_access(settings: Settings) -> Access:
    """Keys alone get a per-process signing secret; replicas behind one proxy share one."""
    secret = settings.token_secret.get_secret_value().encode() if settings.token_secret else None
    if secret is None and settings.api_key_list:
        secret = secrets.token_bytes(32)
    return Access(settings.api_key_list, secret, settings.token_ttl)


def create_app(settings: Settings) -> FastAPI:
    """Build the app; models load in the background once it starts (see ``/ready``)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.shared.start()
        if settings.slots_dir:
            # A worker beside others: accept nothing until ready, so the shared port
            # sends every connection to a worker that can serve it.
            await app.state.shared.wait_ready()
        try:
            yield
        finally:
            await app.state.shared.stop()

    app = FastAPI(title="talkline", lifespan=lifespan)
    app.state.settings = settings
    app.state.access = build_access(settings)
    if settings.origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.origin_list,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    slots = SlotPool(settings.slots_dir, settings.max_sessions) if settings.slots_dir else None
    app.state.sessions = SessionManager(
        settings.max_sessions, settings.max_sessions_per_client, slots
    )
    app.state.shared = SharedResources(settings)
    app.state.metrics = Metrics(lambda: len(app.state.sessions))
    app.include_router(http.router)
    app.include_router(websocket.router)
    if (WEB_DIST / "index.html").is_file():
        app.mount("/", StaticFiles(directory=WEB_DIST, html=True), name="web")
    else:

        @app.get("/", response_class=HTMLResponse)
        async def no_client() -> str:
            return "<h1>talkline</h1><p>The web client is not built. Connect to /ws.</p>"

    return app
