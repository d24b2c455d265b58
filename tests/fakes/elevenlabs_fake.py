"""`ElevenLabsFake`: ElevenLabs' multi-context text-to-speech WebSocket on a loopback port.

Wire facts, from pipecat 1.14 (`services/elevenlabs/tts.py`, `tts_base.py`) and ElevenLabs'
multi-context WebSocket guide (https://elevenlabs.io/docs/eleven-api/guides/how-to/websockets/
multi-context-web-socket):

- The client opens `ws(s)://HOST/v1/text-to-speech/{voice_id}/multi-stream-input?model_id=..&
  output_format=pcm_24000&auto_mode=true` with an `xi-api-key` header.
- Client messages are JSON: `{"text": " ", "context_id", "voice_settings"}` opens a context,
  `{"text", "context_id"}` adds text, `{"context_id", "flush": true}` speaks what is buffered,
  `{"context_id", "close_context": true}` ends a context, `{"text": ""}` keeps the socket alive,
  `{"close_socket": true}` asks the server to close.
- Server messages are JSON: `{"audio": <base64 PCM>, "alignment": {"chars",
  "charStartTimesMs", "charDurationsMs"}, "normalizedAlignment": .., "contextId"}` and, when a
  context is done, `{"isFinal": true, "contextId"}`. Alignment times restart at 0 in each message.
- At most 5 contexts per connection; errors close the socket with 1008 (policy violation) and a
  reason cut to the 123 bytes a close frame can carry.

Not confirmed by a public source, so modelled here and flagged: a bad `xi-api-key` closes the
socket with 1008 "Invalid API key" right after the handshake; `close_context` right after a
`flush` lets the flushed audio finish, while `close_context` with no flush since the last text
(a barge-in) stops that context's audio at once. Both send `isFinal` for the context.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http
import json
import re
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from talkline.emulator.audio import chunks, reply_voice
from talkline.emulator.loopback import WebSocketServer

from .recording import KeyCheck, WebSocketRecord, safe_headers, split_target

PATH = re.compile(r"^/v1/text-to-speech/(?P<voice>[^/]+)/multi-stream-input$")
MAX_CONTEXTS = 5
MAX_REASON_BYTES = 123
REASON_INVALID_KEY = "Invalid API key"
REASON_INACTIVITY = (
    "Have not received a new text input within the timeout of {seconds} seconds. Streaming "
    "input terminated. Please make sure to either feed the input in the timely manner, or to "
    'send the end of input text (empty string "") when done.'
)
REASON_TOO_MANY = (
    "Maximum simultaneous contexts per WebSocket connection exceeded (5). "
    "Please close an existing context before opening a new one."
)


@dataclass
class ContextRecord:
    """One synthesis context: the text it got and the audio it gave back."""

    context_id: str
    voice_settings: dict[str, Any] | None = None
    texts: list[str] = field(default_factory=list)
    flushes: int = 0
    closed: bool = False
    interrupted: bool = False
    audio_bytes: int = 0
    audio_messages: int = 0
    final_sent: bool = False
    flushed_since_text: bool = False

    @property
    def text(self) -> str:
        """All text received, joined as sent."""
        return "".join(self.texts)


@dataclass(kw_only=True)
class ElevenLabsConnection(WebSocketRecord):
    """One WebSocket connection: how it was opened, what arrived, how it ended."""

    voice_id: str
    contexts: dict[str, ContextRecord] = field(default_factory=dict)

    @property
    def model_id(self) -> str | None:
        return self.params.get("model_id")

    @property
    def sample_rate(self) -> int:
        """Rate of the `pcm_<rate>` output format (24000 when none was asked for)."""
        output_format = self.params.get("output_format", "pcm_24000")
        return int(output_format.removeprefix("pcm_"))

    @property
    def texts(self) -> list[str]:
        """Every non-blank text received, in order, over all contexts."""
        return [t for m in self.messages if (t := m.get("text")) and t.strip()]


@dataclass(kw_only=True, eq=False)
class ElevenLabsFake(KeyCheck, WebSocketServer):
    """A loopback ElevenLabs multi-context TTS server.

    `async with ElevenLabsFake() as fake:` then
    `ElevenLabsTTSService(api_key="test-key", url=fake.url, settings=...Settings(voice=...))`.

    api_key: the only key accepted (None accepts any non-empty key).
    ms_per_char, max_seconds: audio length for a text (60 ms a character, capped).
    chunk_ms: audio per message; chunk_delay: seconds between messages (0 = as fast as possible).
    first_audio_delay: seconds before the first audio of each text (a slow synthesiser).
    inactivity_timeout: seconds without a message before closing 1008 (ElevenLabs: 20).
    """

    server_header = "talkline-elevenlabs-fake"

    ms_per_char: float = 60.0
    max_seconds: float = 3.0
    chunk_ms: int = 100
    chunk_delay: float = 0.0
    first_audio_delay: float = 0.0
    inactivity_timeout: float = 20.0
    connections: list[ElevenLabsConnection] = field(default_factory=list, init=False, repr=False)
    close_after_audio_messages: tuple[int, int, str] | None = field(
        default=None, init=False, repr=False
    )
    _handshakes: dict[ServerConnection, ElevenLabsConnection] = field(
        default_factory=dict, init=False, repr=False
    )

    @property
    def url(self) -> str:
        """`ws://127.0.0.1:PORT`, for `ElevenLabsTTSService(url=...)`."""
        return self.base_url

    def _serve_options(self) -> dict[str, Any]:
        return {"max_size": 16 * 1024 * 1024}

    def stream_url(self, voice_id: str, **query: str) -> str:
        """Full endpoint URL for raw WebSocket clients."""
        params = "&".join(
            f"{k}={v}" for k, v in ({"model_id": "eleven_flash_v2_5"} | query).items()
        )
        return f"{self.url}/v1/text-to-speech/{voice_id}/multi-stream-input?{params}"

    # -- recordings and faults --------------------------------------------------

    @property
    def contexts(self) -> list[ContextRecord]:
        """Every context over every connection."""
        return [ctx for c in self.connections for ctx in c.contexts.values()]

    @property
    def texts(self) -> list[str]:
        """Every non-blank text received over every connection."""
        return [t for c in self.connections for t in c.texts]

    def close_mid_stream(
        self,
        after_audio_messages: int = 1,
        code: int = CloseCode.INTERNAL_ERROR,
        reason: str = "We are sorry, something went wrong.",
    ) -> None:
        """Close the socket after the N-th audio message of a connection (fires once)."""
        self.close_after_audio_messages = (after_audio_messages, code, reason)

    def audio_seconds(self, text: str) -> float:
        """How long the audio for `text` lasts."""
        return min(len(text.strip()) * self.ms_per_char / 1000, self.max_seconds)

    # -- connections ---------------------------------------------------------------

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path, query = split_target(request.path)
        match = PATH.match(path)
        if match is None:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "Not Found\n")
        key = request.headers.get("xi-api-key")
        record = ElevenLabsConnection(
            index=len(self.connections),
            path=path,
            voice_id=match["voice"],
            query=query,
            headers=safe_headers(request.headers.raw_items()),
            key_accepted=self.accepts(key),
        )
        self.connections.append(record)
        self._handshakes[connection] = record
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        record = self._handshakes.pop(ws)
        await self.recorder.changed()
        if not record.key_accepted:
            await ws.close(CloseCode.POLICY_VIOLATION, REASON_INVALID_KEY)
        else:
            await _Session(self, ws, record).run()
        record.close_code = ws.close_code
        record.close_reason = ws.close_reason
        await self.recorder.changed()


def _cut(reason: str) -> str:
    """A close reason cut to what a close frame can carry, as ElevenLabs cuts it."""
    return reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore")


class _Session:
    """One accepted connection: reads messages, one speaker task sends audio in order."""

    def __init__(self, fake: ElevenLabsFake, ws: ServerConnection, record: ElevenLabsConnection):
        self.fake = fake
        self.ws = ws
        self.record = record
        self.rate = record.sample_rate
        self.auto_mode = record.params.get("auto_mode", "false") == "true"
        self.timeout = float(record.params.get("inactivity_timeout", fake.inactivity_timeout))
        self.pending: dict[str, str] = {}
        self.jobs: asyncio.Queue[tuple[str, str | None]] = asyncio.Queue()
        self.audio_messages = 0

    async def run(self) -> None:
        speaker = asyncio.create_task(self._speak_loop(), name="elevenlabs-fake-speaker")
        try:
            while True:
                async with asyncio.timeout(self.timeout):
                    raw = await self.ws.recv()
                message = json.loads(raw)
                self.record.messages.append(message)
                await self._on_message(message)
                await self.fake.recorder.changed()
        except TimeoutError:
            seconds = f"{self.timeout:g}"
            reason = REASON_INACTIVITY.format(seconds=seconds)
            await self.ws.close(CloseCode.POLICY_VIOLATION, _cut(reason))
        except ConnectionClosed:
            pass
        finally:
            speaker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await speaker

    async def _on_message(self, message: dict[str, Any]) -> None:
        if message.get("close_socket"):
            await self.ws.close(CloseCode.NORMAL_CLOSURE)
            return
        context_id = message.get("context_id")
        if context_id is None:
            return  # a connection keepalive
        context = self.record.contexts.get(context_id)
        if context is None:
            if len([c for c in self.record.contexts.values() if not c.closed]) >= MAX_CONTEXTS:
                await self._refuse_context()
                return
            context = ContextRecord(context_id, voice_settings=message.get("voice_settings"))
            self.record.contexts[context_id] = context
        text = message.get("text")
        if text and text.strip():
            context.texts.append(text)
            context.flushed_since_text = False
            self.pending[context_id] = self.pending.get(context_id, "") + text
            if self.auto_mode:
                self._queue_pending(context_id)
        if message.get("flush"):
            context.flushes += 1
            context.flushed_since_text = True
            self._queue_pending(context_id)
        if message.get("close_context"):
            self._close(context)

    def _queue_pending(self, context_id: str) -> None:
        text = self.pending.pop(context_id, "")
        if text.strip():
            self.jobs.put_nowait((context_id, text))

    def _close(self, context: ContextRecord) -> None:
        context.closed = True
        self.pending.pop(context.context_id, None)
        if not context.flushed_since_text:
            context.interrupted = True  # a barge-in: its queued audio is dropped
        self.jobs.put_nowait((context.context_id, None))

    async def _refuse_context(self) -> None:
        error = {"message": REASON_TOO_MANY, "error": "max_active_conversations", "code": 1008}
        await self.ws.send(json.dumps(error))
        await self.ws.close(CloseCode.POLICY_VIOLATION, _cut(REASON_TOO_MANY))

    async def _speak_loop(self) -> None:
        while True:
            context_id, text = await self.jobs.get()
            context = self.record.contexts[context_id]
            if text is None:
                if not context.final_sent:
                    context.final_sent = True
                    await self.ws.send(json.dumps({"isFinal": True, "contextId": context_id}))
                    await self.fake.recorder.changed()
            elif not context.interrupted:
                await self._speak(context, text)

    async def _speak(self, context: ContextRecord, text: str) -> None:
        seconds = self.fake.audio_seconds(text)
        pcm = reply_voice(round(seconds, 3), self.rate)
        chunk_bytes = 2 * self.rate * self.fake.chunk_ms // 1000
        if self.fake.first_audio_delay:
            await asyncio.sleep(self.fake.first_audio_delay)
        for index, piece in enumerate(chunks(pcm, chunk_bytes)):
            if context.interrupted:
                return
            alignment = chunk_alignment(text, seconds * 1000, index, self.fake.chunk_ms)
            message = {
                "audio": base64.b64encode(piece).decode(),
                "alignment": alignment,
                "normalizedAlignment": alignment,
                "contextId": context.context_id,
            }
            await self.ws.send(json.dumps(message))
            context.audio_bytes += len(piece)
            context.audio_messages += 1
            self.audio_messages += 1
            await self.fake.recorder.changed()
            await self._maybe_fault()
            if self.fake.chunk_delay:
                await asyncio.sleep(self.fake.chunk_delay)

    async def _maybe_fault(self) -> None:
        fault = self.fake.close_after_audio_messages
        if fault is not None and self.audio_messages >= fault[0]:
            self.fake.close_after_audio_messages = None
            await self.ws.close(fault[1], _cut(fault[2]))


def chunk_alignment(
    text: str, total_ms: float, index: int, chunk_ms: int
) -> dict[str, list[Any]] | None:
    """Character timings for the characters that start within chunk `index`.

    Characters are spread evenly over the audio; times restart at 0 in every chunk, as in
    ElevenLabs' messages. None when no character starts in the chunk.
    """
    step = total_ms / len(text) if text else 0.0
    start, end = index * chunk_ms, (index + 1) * chunk_ms
    picked = [(c, i * step) for i, c in enumerate(text) if start <= i * step < end]
    if not picked:
        return None
    return {
        "chars": [c for c, _ in picked],
        "charStartTimesMs": [round(t - start) for _, t in picked],
        "charDurationsMs": [max(1, round(step))] * len(picked),
    }
