"""A small RTVI client over WebSocket: what ``talkline talk``, the tests and the bench speak.

It speaks exactly what Pipecat's ``ProtobufFrameSerializer`` and the official
``@pipecat-ai/websocket-transport`` speak: binary protobuf ``Frame`` messages carrying raw
audio or an RTVI JSON message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pipecat.frames.protobufs.frames_pb2 as frame_protos
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from talkline.audio import rms

RTVI_VERSION = "2.1.0"
CHUNK_SAMPLES = 512  # what the JS client sends at 16 kHz: 32 ms
CHUNK_SECS = CHUNK_SAMPLES / 16000
VOICED_RMS = 300.0  # int16 RMS above which a chunk counts as speech


def audio_frame(pcm: bytes, sample_rate: int = 16000, channels: int = 1) -> bytes:
    frame = frame_protos.Frame()  # type: ignore[attr-defined]
    frame.audio.audio = pcm
    frame.audio.sample_rate = sample_rate
    frame.audio.num_channels = channels
    return bytes(frame.SerializeToString())


def message_frame(message: dict[str, Any]) -> bytes:
    frame = frame_protos.Frame()  # type: ignore[attr-defined]
    frame.message.data = json.dumps(message)
    return bytes(frame.SerializeToString())


def rtvi_message(kind: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"label": "rtvi-ai", "type": kind, "id": uuid.uuid4().hex[:8]}
    if data is not None:
        message["data"] = data
    return message


@dataclass
class Event:
    """Something the server said, stamped with the client's monotonic clock."""

    type: str
    at: float
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class BotTurn:
    """One answer of the bot as the client heard it."""

    first_audio_at: float
    latency: float | None  # end of the user's speech to the first bot audio byte
    audio: bytearray = field(default_factory=bytearray)
    ended: bool = False


class RTVIClient:
    """One connection to talkline's /ws; collects events, bot audio and latencies."""

    def __init__(
        self, url: str, *, sample_rate: int = 16000, channels: int = 1, source: str | None = None
    ):
        self.url = url
        self.source = source  # the local IP address to connect from (default: the system's)
        self.sample_rate = sample_rate  # of the audio it sends; may change between streams
        self.channels = channels
        self.events: list[Event] = []
        self.turns: list[BotTurn] = []
        self.bot_audio = bytearray()
        self.bot_sample_rate = 24000
        self.last_voiced_sent_at: float | None = None
        self.sent_audio_bytes = 0
        self.sent_audio_secs = 0.0
        self.close_code: int | None = None
        self.close_reason = ""
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> RTVIClient:
        await self.connect()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def connect(self) -> None:
        local: dict[str, Any] = {"local_addr": (self.source, 0)} if self.source else {}
        self._ws = await connect(self.url, max_size=2**22, open_timeout=10, **local)
        self._reader = asyncio.create_task(self._read(), name="rtvi-client-reader")

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    @property
    def connection(self) -> ClientConnection:
        assert self._ws is not None, "not connected"
        return self._ws

    async def send_message(self, message: dict[str, Any]) -> None:
        await self.connection.send(message_frame(message))

    async def client_ready(self) -> Event:
        await self.send_message(
            rtvi_message("client-ready", {"version": RTVI_VERSION, "about": {"library": "talk"}})
        )
        return await self.wait_for("bot-ready")

    async def send_audio(self, pcm: bytes) -> None:
        if rms(pcm) >= VOICED_RMS:
            self.last_voiced_sent_at = time.monotonic()
        await self.connection.send(audio_frame(pcm, self.sample_rate, self.channels))
        self.sent_audio_bytes += len(pcm)
        self.sent_audio_secs += len(pcm) / self.bytes_per_second

    @property
    def bytes_per_second(self) -> int:
        return 2 * self.channels * self.sample_rate

    async def stream(self, pcm: bytes, *, realtime: bool = True) -> None:
        """Send 16-bit PCM (interleaved channels) in 32 ms chunks, paced like a microphone."""
        step = max(1, round(self.sample_rate * CHUNK_SECS)) * 2 * self.channels
        start = time.monotonic()
        for offset in range(0, len(pcm), step):
            await self.send_audio(pcm[offset : offset + step])
            if realtime:
                due = start + (offset + step) / self.bytes_per_second
                await asyncio.sleep(max(0.0, due - time.monotonic()))

    async def silence(self, seconds: float) -> None:
        await self.stream(bytes(int(seconds * self.sample_rate) * 2 * self.channels))

    async def _read(self) -> None:
        ws = self.connection
        try:
            async for raw in ws:
                if isinstance(raw, bytes):
                    await self._handle(raw)
        except ConnectionClosed:
            pass
        finally:
            if ws is self._ws:  # a connection given up for another says nothing of it
                self.close_code = ws.close_code or 1006
                self.close_reason = ws.close_reason or ""
                self._on_closed()
                await self._record(Event("closed", time.monotonic(), {"code": self.close_code}))

    def _on_closed(self) -> None:
        """Called as the connection closes, before waiters hear of it."""

    async def _handle(self, raw: bytes) -> None:
        frame = frame_protos.Frame.FromString(  # type: ignore[attr-defined]
            raw
        )
        kind = frame.WhichOneof("frame")
        now = time.monotonic()
        if kind == "audio":
            self._on_audio(frame.audio, now)
            async with self._changed:
                self._changed.notify_all()
        elif kind == "message":
            message = json.loads(frame.message.data)
            data = message.get("data")
            await self._record(Event(message.get("type", "?"), now, data or {}))

    def _on_audio(self, audio: Any, now: float) -> None:
        self.bot_sample_rate = audio.sample_rate or self.bot_sample_rate
        self.bot_audio.extend(audio.audio)
        if not self.turns or self.turns[-1].ended:
            sent = self.last_voiced_sent_at
            self.turns.append(BotTurn(now, now - sent if sent else None))
        self.turns[-1].audio.extend(audio.audio)

    async def _record(self, event: Event) -> None:
        if event.type in ("bot-stopped-speaking", "bot-interrupted") and self.turns:
            self.turns[-1].ended = True
        self.events.append(event)
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, kind: str, *, after: int = 0, timeout: float = 30.0) -> Event:
        """The first event of ``kind`` at index ``after`` or later, once it has come."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.first(kind, after) is not None or self.closed)
        event = self.first(kind, after)
        if event is None:
            raise ConnectionError(f"closed ({self.close_code} {self.close_reason}) before {kind}")
        return event

    async def wait_until(self, predicate: Any, *, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    def first(self, kind: str, after: int = 0) -> Event | None:
        """The first event of ``kind`` at index ``after`` or later, if any has come."""
        return next((e for e in self.events[after:] if e.type == kind), None)

    def of_type(self, kind: str) -> list[Event]:
        return [event for event in self.events if event.type == kind]
