"""Serving: one process, or a supervisor and worker processes sharing one port and one cap.

Shutdown is graceful either way. On SIGTERM or SIGINT, uvicorn alone would close its
listening socket at once; talkline first drains: ``/ready`` turns 503, new sessions are
refused with 1013 "server shutting down", live sessions are told and may finish the current
turn (up to ``drain_timeout``), then close with 1001; only then does uvicorn shut down,
stopping Piper with the app's lifespan, and the process exits 0. A second signal skips the
drain. A supervisor forwards SIGTERM to its workers and exits 0 once they all have.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from types import FrameType

import uvicorn
from fastapi import FastAPI
from loguru import logger

from talkline.config import Settings
from talkline.routes.deps import server_state

RESPAWN_DELAY_SECS = 1.0


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


class Supervisor:
    """Binds the port once and runs ``workers`` worker processes on it, one session cap."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.stopping = False
        self.children: list[subprocess.Popen[bytes]] = []

    def run(self) -> int:
        listener = socket.create_server((self.settings.host, self.settings.port), backlog=2048)
        listener.set_inheritable(True)
        slots = tempfile.mkdtemp(prefix="talkline-slots-")
        env = os.environ | {"TALKLINE_SLOTS_DIR": slots, "TALKLINE_WORKERS": "1"}
        command = [sys.executable, "-m", "talkline", "serve", "--fd", str(listener.fileno())]
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        try:
            self.children = [self._spawn(command, env, listener) for _ in range(self.workers)]
            logger.info(f"{self.workers} workers on port {self.settings.port}, one session cap")
            self._watch(command, env, listener)
        finally:
            listener.close()
            shutil.rmtree(slots, ignore_errors=True)
        return 0

    @property
    def workers(self) -> int:
        return self.settings.workers

    def _spawn(
        self, command: list[str], env: dict[str, str], listener: socket.socket
    ) -> subprocess.Popen[bytes]:
        # A session of its own: a terminal's Ctrl-C reaches only the supervisor, which
        # forwards one SIGTERM, so workers drain instead of taking it as a second signal.
        return subprocess.Popen(
            command, env=env, pass_fds=[listener.fileno()], start_new_session=True
        )

    def _watch(self, command: list[str], env: dict[str, str], listener: socket.socket) -> None:
        while self.children:
            time.sleep(0.2)
            for index, child in enumerate(list(self.children)):
                if child.poll() is None:
                    continue
                if self.stopping:
                    self.children.remove(child)
                    continue
                logger.warning(f"worker {child.pid} exited ({child.returncode}); restarting")
                time.sleep(RESPAWN_DELAY_SECS)
                self.children[index] = self._spawn(command, env, listener)

    def _on_signal(self, sig: int, _frame: FrameType | None) -> None:
        if self.stopping:
            return
        self.stopping = True
        logger.info(f"{signal.Signals(sig).name}: draining {len(self.children)} workers")
        for child in self.children:
            child.send_signal(signal.SIGTERM)
