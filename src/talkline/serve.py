"""Serving one process: uvicorn with a drain before the shutdown (``supervisor.py`` runs
several of them on one port).

Shutdown is graceful. On SIGTERM or SIGINT, uvicorn alone would close its
listening socket at once; talkline first drains: ``/ready`` turns 503, new sessions are
refused with 1013 "server shutting down", live sessions are told and may finish the current
turn (up to ``drain_timeout``), then close with 1001; only then does uvicorn shut down,
stopping Piper with the app's lifespan, and the process exits 0. A second signal skips the
drain.
"""

from __future__ import annotations

import asyncio
import signal
from types import FrameType

import uvicorn
from fastapi import FastAPI
from loguru import logger

from talkline.config import Settings
from talkline.routes.deps import server_state


class DrainingServer(uvicorn.Server):
    """uvicorn, with a drain before the shutdown."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, drain_timeout: float):
        super().__init__(config)
        self._app = app
        self._drain_timeout = drain_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining: asyncio.Task[None] | None = None

    async def startup(self, sockets: list | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is None or self._draining is not None:
            super().handle_exit(sig, frame)  # not started yet, or asked twice: stop now
            return
        name = signal.Signals(sig).name
        logger.info(f"{name}: draining for up to {self._drain_timeout:g} s, then exiting")
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._draining = asyncio.ensure_future(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        await server_state(self._app).admission.drain(self._drain_timeout)
        logger.info("drained; shutting down")
        self.should_exit = True


def serve(app: FastAPI, settings: Settings, fd: int | None = None) -> None:
    """Serve ``app`` in this process, on ``settings`` host and port or an inherited socket."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        fd=fd,
        log_level="warning",
        ws_max_size=settings.max_message_bytes * 4,
        # PCM does not compress; browsers offer permessage-deflate and it cost ~3% of the
        # server's time compressing and inflating every audio message.
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=5,
    )
    DrainingServer(config, app, settings.drain_timeout).run()
