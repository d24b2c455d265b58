"""The FastAPI application: routes, the web client, and the lifetime of shared resources.

``create_app`` is where settings become each component's own options; everything below it
takes those options, not ``Settings``.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from talkline.admission import Admission
from talkline.auth import Access
from talkline.config import Settings
from talkline.coordinator import CoordinatorOptions, build_coordinator
from talkline.coordinator.resume import RedisResumeRegistry, build_registry
from talkline.history import api as history_api
from talkline.history.service import History, HistoryOptions
from talkline.metrics import Metrics
from talkline.pipelines.build import PipelineFactory
from talkline.resources import ResourceOptions, SharedResources
from talkline.resumption import share_signing_key
from talkline.routes import http, websocket
from talkline.routes.deps import ServerState
from talkline.services.llama_server import LocalLLMOptions
from talkline.services.piper_process import PiperProcess
from talkline.session import SessionOptions
from talkline.transport import InputLimits

WEB_DIST = Path(__file__).parent / "web" / "dist"


def build_access(settings: Settings) -> Access:
    """Keys alone get a per-process signing secret; replicas behind one proxy share one."""
    secret = settings.token_secret.get_secret_value().encode() if settings.token_secret else None
    if secret is None and settings.api_key_list:
        secret = secrets.token_bytes(32)
    if secret is None:  # access off: resume tokens still need a signature
        return Access(settings.api_key_list, None, settings.token_ttl)
    return Access(settings.api_key_list, secret, settings.token_ttl, resume_secret=secret)


def resource_options(settings: Settings) -> ResourceOptions:
    whisper = settings.effective_stt == "whisper"
    moonshine = settings.effective_stt == "moonshine"
    return settings.options(
        ResourceOptions,
        whisper_model=settings.whisper_model_path if whisper else None,
        moonshine_model=settings.moonshine_model_path if moonshine else None,
        model_cache_dir=settings.model_cache_path,
        piper_voice=settings.piper_voice_path if settings.effective_tts == "piper" else None,
        local_llm=local_llm_options(settings),
        gemini=settings.effective_brain == "gemini",
    )


def local_llm_options(settings: Settings) -> LocalLLMOptions | None:
    """llama.cpp's server, when the offline brain answers with the local LLM."""
    if settings.effective_brain != "local" or settings.effective_responder != "local":
        return None
    return settings.options(
        LocalLLMOptions, prefix="local_llm_", model=settings.local_llm_model_path
    )


def session_options(settings: Settings) -> SessionOptions:
    return settings.options(
        SessionOptions,
        about=settings.about(),
        run_on_client_ready=settings.effective_brain == "gemini",
        replica=settings.replica,
        limits=settings.options(InputLimits, sample_rate=settings.audio_in_rate),
    )


def build_history(settings: Settings, metrics: Metrics) -> History | None:
    if not settings.history:
        return None
    options = settings.options(
        HistoryOptions,
        prefix="history_",
        url=settings.history_url,
        replica=settings.replica,
    )
    return History(options, metrics.registry)


def create_app(
    settings: Settings, shared: SharedResources | None = None, *, piper: PiperProcess | None = None
) -> FastAPI:
    """Build the app; models load in the background once it starts (see ``/ready``).

    ``shared`` replaces the resources the settings ask for (tests pass stand-ins that load
    no models); ``piper``: the Piper they ask for, already spawned (``early_piper``).
    """
    shared = shared or SharedResources(resource_options(settings), piper=piper)
    coordinator = build_coordinator(settings.options(CoordinatorOptions))
    admission = Admission(shared, settings.max_sessions, coordinator=coordinator)
    registry = None
    if settings.resume_window > 0:
        redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
        registry = build_registry(redis_url, settings.resume_window)
    metrics = Metrics(lambda: len(admission))
    history = build_history(settings, metrics)
    access = build_access(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if history is not None:
            history.start()
        shared.start()
        await coordinator.start()
        signing = None
        if isinstance(registry, RedisResumeRegistry) and access.secret is None:
            signing = asyncio.create_task(share_signing_key(registry, access))
        if settings.slots_dir:
            # A worker beside others: accept nothing until ready, so the shared port
            # sends every connection to a worker that can serve it.
            await shared.wait_ready()
        watching = asyncio.create_task(metrics.watch_loop(), name="loop-lag")
        try:
            yield
        finally:
            watching.cancel()
            if signing is not None:
                signing.cancel()
            await coordinator.stop()
            await shared.stop()
            if registry is not None:
                await registry.close()
            if history is not None:
                await history.stop()

    app = FastAPI(title="talkline", lifespan=lifespan)
    if settings.origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.origin_list,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.state.talkline = ServerState(
        settings=settings,
        access=access,
        admission=admission,
        shared=shared,
        metrics=metrics,
        session_options=session_options(settings),
        pipelines=PipelineFactory(settings, shared),
        registry=registry,
        history=history,
    )
    app.include_router(http.router)
    app.include_router(websocket.router)
    app.include_router(history_api.router)
    if (WEB_DIST / "index.html").is_file():
        app.mount("/", StaticFiles(directory=WEB_DIST, html=True), name="web")
    else:

        @app.get("/", response_class=HTMLResponse)
        async def no_client() -> str:
            return "<h1>talkline</h1><p>The web client is not built. Connect to /ws.</p>"

    return app
