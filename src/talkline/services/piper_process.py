"""Piper's own HTTP server as a supervised child process, shared by every session.

Piper is GPL-3.0 and talkline is MIT, so Piper never loads into talkline's process: it
runs as ``python -m piper.http_server`` and sessions reach it over HTTP through Pipecat's
``PiperHttpTTSService``. ``ChildServer`` starts it, waits until it answers, restarts it if
it dies (on the same port, so sessions need not know), and stops it on exit.
"""

from __future__ import annotations

import sys
from pathlib import Path

from talkline.services.child_server import ChildServer, ChildServerUnavailableError


class PiperUnavailableError(ChildServerUnavailableError):
    """Piper's server did not come up."""


class PiperProcess(ChildServer):
    """Starts, health-checks, restarts and stops one Piper HTTP server."""

    health_path = "/info"
    unavailable = PiperUnavailableError

    def __init__(self, voice_path: Path, *, port: int = 0):
        if not voice_path.is_file():
            raise FileNotFoundError(f"no Piper voice at {voice_path}")
        super().__init__(port=port)
        self.voice_path = voice_path
        self.voice_id = voice_path.name.removesuffix(".onnx")
        self.name = f"Piper ({self.voice_id})"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "piper.http_server",
            "--host", "127.0.0.1", "--port", str(self.port),
            "-m", str(self.voice_path),
            "--data-dir", str(self.voice_path.parent),
        ]  # fmt: skip
