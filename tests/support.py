"""Test support: a real talkline server on 127.0.0.1 and real speech made with Piper."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import typing
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import numpy as np
import uvicorn
from fastapi import FastAPI
from pipecat.frames.frames import Frame
from pipecat.observers.base_observer import FramePushed
from pipecat.processors.frame_processor import FrameDirection
from pydantic import SecretStr

from talkline.app import create_app
from talkline.client import RTVIClient
from talkline.config import Settings
from talkline.emulator import GeminiEmulator, wire
from talkline.resources import ResourceOptions, SharedResources
from talkline.routes.deps import ServerState, server_state

READY_TIMEOUT_SECS = 90.0
T = TypeVar("T")


class StandInResources(SharedResources):
    """Shared resources that load no model: for tests of the doors, not of conversations.

    Ready at once unless ``ready=False``; ``failure`` makes start-up fail with that text.
    """

    def __init__(self, *, ready: bool = True, failure: str | None = None):
        super().__init__(ResourceOptions())
        if ready and failure is None:
            self.ready.set()
        self.failure = failure

    def start(self) -> None:
        """Nothing to load."""

    async def stop(self) -> None:
        """Nothing to free."""


def local_settings(**overrides: Any) -> Settings:
    """Settings of the offline brain, from ``overrides`` alone (no environment, no .env)."""
    values = {"brain": "local"} | overrides
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def in_process(app: FastAPI) -> httpx.AsyncClient:
    """An HTTP client that calls ``app`` in this process, without a socket."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


class OnLoopback:
    """Something serving talkline on 127.0.0.1 at ``port``: its HTTP and /ws addresses."""

    port: int

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


class ServerThread(OnLoopback):
    """talkline's app under uvicorn in a thread, serving real sockets on 127.0.0.1."""

    def __init__(self, settings: Settings, shared: SharedResources | None = None):
        self.settings = settings
        self.app = create_app(settings, shared)
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
    def state(self) -> ServerState:
        return server_state(self.app)

    @property
    def shared(self) -> SharedResources:
        return self.state.shared

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + READY_TIMEOUT_SECS
        while not (self.server.started and self.server.servers):
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        self.port = int(self.server.servers[0].sockets[0].getsockname()[1])
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
    with serving(ServerThread(local_settings(**overrides))) as server:
        yield server


def running_doors(**overrides: Any) -> contextlib.AbstractContextManager[ServerThread]:
    """A server on real sockets whose resources are stand-ins: its doors work, not sessions."""
    return serving(ServerThread(local_settings(**overrides), StandInResources()))


@contextlib.contextmanager
def serving(server: ServerThread) -> Iterator[ServerThread]:
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


ANSWER_TIMEOUT = 60.0


async def speak_and_wait_for_answer(client: RTVIClient, pcm: bytes) -> None:
    """Stream ``pcm`` like a microphone, then silence until the bot has finished answering."""
    await client.stream(pcm)
    for _ in range(int(ANSWER_TIMEOUT / 0.256)):
        if client.of_type("bot-stopped-speaking") or client.closed:
            return
        await client.silence(0.256)
    raise AssertionError(f"no answer; events: {[e.type for e in client.events]}")


def final_transcript(client: RTVIClient) -> str:
    """What the server heard the user say, from its final transcripts."""
    texts = [e.data["text"] for e in client.of_type("user-transcription") if e.data.get("final")]
    return " ".join(texts)


def bot_text(client: RTVIClient) -> str:
    """What the bot said, from its ``bot-tts-text`` events."""
    return " ".join(e.data.get("text", "") for e in client.of_type("bot-tts-text"))


async def speak_until_turns(client: RTVIClient, pcm: bytes, answered: int) -> None:
    """Stream ``pcm``, then silence until ``answered`` bot answers have finished."""
    await client.stream(pcm)
    async with asyncio.timeout(ANSWER_TIMEOUT):
        while len(client.of_type("bot-stopped-speaking")) < answered:
            await client.silence(0.128)


def pushed(
    frame: Frame, *, first: bool = True, direction: FrameDirection = FrameDirection.DOWNSTREAM
) -> FramePushed:
    """An observer's view of ``frame`` pushed (``first``: the first time)."""
    return FramePushed(None, None, frame, direction, 0, first)  # type: ignore[arg-type]


def secret_fields() -> list[str]:
    """Every setting typed ``SecretStr`` (alone or optional), found by reading the model."""
    return [
        name
        for name, info in Settings.model_fields.items()
        if info.annotation is SecretStr or SecretStr in typing.get_args(info.annotation)
    ]


URL_SCHEMES = {"redis_url": "redis://", "database_url": "postgresql+asyncpg://"}


def distinctive(name: str) -> str:
    """A value for secret setting ``name`` that cannot appear anywhere by chance (a URL
    setting gets it as the password of a URL its validation accepts)."""
    value = f"s3cr3t-{name.replace('_', '-')}-value"
    if scheme := URL_SCHEMES.get(name):
        return f"{scheme}talkline:{value}@127.0.0.1:9/0"
    return value


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


def upstream_audio(emulator: GeminiEmulator) -> tuple[set[str], bytes]:
    """The mime types and the PCM of every user audio message the emulator received."""
    mimes, pcm = set(), bytearray()
    for connection in emulator.connections:
        for message in connection.messages:
            realtime = wire.normalize(message).get("realtime_input") or {}
            blobs = [realtime["audio"]] if realtime.get("audio") else []
            for blob in blobs + (realtime.get("media_chunks") or []):
                mimes.add(blob["mime_type"])
                pcm += wire.decode_b64(blob["data"])
    return mimes, bytes(pcm)


def speech_of(pcm: bytes) -> np.ndarray:
    """The samples of ``pcm`` from its first to its last clearly audible one: over 300, or
    over a twentieth of the loudest for speech too soft to reach much more."""
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    audible = np.flatnonzero(np.abs(samples) > min(300.0, np.abs(samples).max() / 20))
    return samples[audible[0] : audible[-1] + 1]


def best_match(audio: bytes, reference: np.ndarray) -> float:
    """How closely the best-aligned stretch of ``audio`` follows ``reference``: the normalized
    correlation, 1.0 for the same waveform at any loudness, near 0 for other sound."""
    samples = np.frombuffer(audio, dtype=np.int16).astype(np.float64)
    if len(samples) < len(reference):
        return 0.0
    size = 1 << (len(samples) + len(reference)).bit_length()
    spectrum = np.fft.rfft(samples, size) * np.conj(np.fft.rfft(reference, size))
    lags = np.fft.irfft(spectrum, size)[: len(samples) - len(reference) + 1]
    start = int(np.argmax(np.abs(lags)))
    stretch = samples[start : start + len(reference)]
    return float(stretch @ reference / np.sqrt((stretch @ stretch) * (reference @ reference)))


def turn_audio(emulator: GeminiEmulator, pcm: bytes) -> list[bytes]:
    """The audio the emulator received for each user turn, in order."""
    pieces, start = [], 0
    for turn in emulator.turns:
        pieces.append(pcm[start : start + turn.user_audio_bytes])
        start += turn.user_audio_bytes
    return pieces


async def quiet_not_sent(server: ServerThread, sessions: int = 1) -> int:
    """Bytes of quiet audio the server's sessions held back from Gemini, read from
    /metrics' counter once ``sessions`` sessions have ended (it counts at the end)."""
    registry = server.state.metrics.registry

    def ended() -> float:
        family = next(m for m in registry.collect() if m.name == "talkline_sessions_ended")
        return sum(s.value for s in family.samples if s.name.endswith("_total"))

    async with asyncio.timeout(20):
        while ended() < sessions:
            await asyncio.sleep(0.05)
    seconds = registry.get_sample_value("talkline_upstream_quiet_not_sent_seconds_total")
    return round((seconds or 0.0) * 2 * 16000)


async def heard_or_held_quiet(
    server: ServerThread, emulator: GeminiEmulator, client: RTVIClient, speech: bytes, times: int
) -> None:
    """Nothing the client sent was lost on the way to Gemini, for a client that streamed only
    ``speech`` (16 kHz, which the server passes through untouched) and digital silence.

    The counts add up: every byte reached Gemini or is counted as held-back quiet. And the
    clearly audible span of ``speech`` (``speech_of``) is in Gemini's audio,
    byte for byte, ``times`` times. Together: what was held back was silence or the speech's
    faint edges, and nothing was sent twice (a copy would break the count)."""
    held = await quiet_not_sent(server)
    assert emulator.audio_bytes + held == client.sent_audio_bytes, (emulator.audio_bytes, held)
    _, pcm = upstream_audio(emulator)
    spoken = speech_of(speech).astype(np.int16).tobytes()
    assert pcm.count(spoken) == times, (pcm.count(spoken), times)
