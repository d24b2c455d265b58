"""Several worker processes on one port and one session cap, started and watched.

The supervisor binds the port once and passes the socket to each worker (``talkline serve
--fd``), which serves it as ``serve.py`` does. It imports none of the server: the workers do,
so a multi-worker start pays for Pipecat, FastAPI and the models once per worker, in
parallel, and not once more up front; and the supervisor stays a small process. It forwards
SIGTERM to its workers, which drain, and exits 0 once they all have.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from types import FrameType

from loguru import logger

from talkline.config import Settings

RESPAWN_DELAY_SECS = 1.0


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
