"""`DeepgramFake`: Deepgram's live transcription WebSocket (`/v1/listen`) on a loopback port.

Wire facts, from Deepgram's docs and deepgram-sdk 7.17 (`listen/v1/raw_client.py`,
`listen/v1/socket_client.py`, `listen/v1/types/`):

- The client opens `ws(s)://HOST/v1/listen?model=..&encoding=linear16&sample_rate=16000&...`
  with `Authorization: Token <key>` (or `Bearer <temporary token>`).
- A refused handshake is a plain HTTP answer (401 for bad credentials) carrying the reason in
  a `dg-error` header and the request id in `dg-request-id`; the body is JSON with `err_code`,
  `err_msg` and `request_id`.
- Audio goes in as binary frames; control goes in as JSON text: `KeepAlive`, `Finalize`
  (answered with a final `Results` carrying `from_finalize: true`), `CloseStream` (the server
  flushes, sends a summary `Metadata` and closes the socket).
- Out come JSON `Results` (`channel.alternatives[0].transcript`, `is_final`, `speech_final`),
  `SpeechStarted` (with `vad_events=true`), `UtteranceEnd` (with `utterance_end_ms`) and
  `Metadata`.

The fake hears speech by energy, not words: each voiced stretch of linear16 audio followed by
`silence_ms` of quiet becomes one utterance whose transcript is `transcript`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import http
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from talkline.emulator.audio import Activity, EnergyDetector
from talkline.emulator.loopback import WebSocketServer

from .recording import KeyCheck, WebSocketRecord, safe_headers, split_target

LISTEN_PATH = "/v1/listen"
DEFAULT_TRANSCRIPT = "hello from deepgram"
MODEL_INFO = {"name": "general-nova-3", "version": "2025-01-01.0", "arch": "nova-3"}
INVALID_AUTH = {"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials."}
# Deepgram closes a stream that got no audio or message for 10 s with NET-0001.
REASON_NET_0001 = (
    "Deepgram did not receive audio data or a text message within the timeout window. "
    "See https://dpgr.am/net0001"
)


@dataclass
class Utterance:
    """One finalised stretch of speech; times are seconds of received audio."""

    start: float
    end: float
    transcript: str
    cause: str  # "silence", "finalize" or "close_stream"


@dataclass(kw_only=True)
class DeepgramConnection(WebSocketRecord):
    """One WebSocket handshake and, when accepted, everything that crossed it."""

    auth_scheme: str | None
    status: int
    request_id: str
    audio: bytearray = field(default_factory=bytearray)
    audio_frames: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)
    utterances: list[Utterance] = field(default_factory=list)

    @property
    def message_types(self) -> list[str]:
        """`type` of each control message received, in order."""
        return [str(m.get("type")) for m in self.messages]


@dataclass
class StreamFault:
    """Close the stream once `after_audio_bytes` of audio have arrived (fires once)."""

    after_audio_bytes: int
    code: int = CloseCode.INTERNAL_ERROR
    reason: str = REASON_NET_0001
    drop: bool = False  # abort the TCP connection instead of sending a close frame
    fired: bool = False


@dataclass(kw_only=True, eq=False)
class DeepgramFake(KeyCheck, WebSocketServer):
    """A loopback Deepgram live-transcription server.

    `async with DeepgramFake() as fake:` then
    `DeepgramSTTService(api_key="test-key", base_url=fake.base_url)`.

    api_key: the only key accepted (None accepts any); others get HTTP 401 at the handshake.
    transcript: what every utterance says; may be changed between utterances.
    threshold, start_ms, silence_ms: the energy detector (RMS of 16-bit samples).
    result_delay: seconds to hold back each `Results` (a slow recogniser).
    refuse_status: when set, every handshake is refused with this HTTP status.
    """

    server_header = "talkline-deepgram-fake"

    transcript: str = DEFAULT_TRANSCRIPT
    threshold: float = 500.0
    start_ms: float = 60.0
    silence_ms: float = 300.0
    result_delay: float = 0.0
    refuse_status: int | None = None
    connections: list[DeepgramConnection] = field(default_factory=list, init=False, repr=False)
    faults: list[StreamFault] = field(default_factory=list, init=False, repr=False)
    _handshakes: dict[ServerConnection, DeepgramConnection] = field(
        default_factory=dict, init=False, repr=False
    )

    def _serve_options(self) -> dict[str, Any]:
        return {"select_subprotocol": _select_subprotocol}

    @property
    def listen_url(self) -> str:
        """Full URL of the live endpoint, for raw WebSocket clients."""
        return f"{self.base_url}{LISTEN_PATH}"

    # -- recordings -----------------------------------------------------------

    @property
    def accepted(self) -> list[DeepgramConnection]:
        """Connections whose handshake succeeded."""
        return [c for c in self.connections if c.status == http.HTTPStatus.SWITCHING_PROTOCOLS]

    @property
    def audio_bytes(self) -> int:
        """Audio bytes received over every connection."""
        return sum(len(c.audio) for c in self.connections)

    @property
    def utterances(self) -> list[Utterance]:
        """Every finalised utterance over every connection."""
        return [u for c in self.connections for u in c.utterances]

    # -- faults ---------------------------------------------------------------

    def close_mid_stream(self, after_audio_bytes: int = 1, **options: Any) -> StreamFault:
        """Close the next stream that has received `after_audio_bytes` of audio."""
        fault = StreamFault(after_audio_bytes, **options)
        self.faults.append(fault)
        return fault

    # -- handshake --------------------------------------------------------------

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path, query = split_target(request.path)
        scheme, key = _credentials(request)
        record = DeepgramConnection(
            index=len(self.connections),
            path=path,
            query=query,
            headers=safe_headers(request.headers.raw_items()),
            auth_scheme=scheme,
            key_accepted=self.accepts(key),
            status=http.HTTPStatus.SWITCHING_PROTOCOLS,
            request_id=str(uuid.uuid4()),
        )
        self.connections.append(record)
        self._handshakes[connection] = record
        if path != LISTEN_PATH:
            return self._refuse(connection, record, http.HTTPStatus.NOT_FOUND, "Not Found")
        if not record.key_accepted:
            return self._refuse(connection, record, http.HTTPStatus.UNAUTHORIZED, INVALID_AUTH)
        if self.refuse_status is not None:
            status = http.HTTPStatus(self.refuse_status)
            return self._refuse(connection, record, status, status.phrase)
        return None

    def _refuse(
        self,
        connection: ServerConnection,
        record: DeepgramConnection,
        status: http.HTTPStatus,
        error: dict[str, str] | str,
    ) -> Response:
        record.status = status
        del self._handshakes[connection]
        body = error if isinstance(error, dict) else {"err_code": status.name, "err_msg": error}
        body = body | {"request_id": record.request_id}
        response = connection.respond(status, json.dumps(body))
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        response.headers["dg-error"] = str(body["err_msg"])
        response.headers["dg-request-id"] = record.request_id
        logger.info("Deepgram fake refused a handshake with {}", status)
        return response

    async def _handle(self, ws: ServerConnection) -> None:
        record = self._handshakes.pop(ws)
        await self.recorder.changed()
        await _Stream(self, ws, record).run()
        await self.recorder.changed()


def _credentials(request: Request) -> tuple[str | None, str | None]:
    """How the client authenticated (`Token`, `Bearer` or `subprotocol`) and the key it sent."""
    authorization = request.headers.get("Authorization", "")
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() in ("token", "bearer") and key:
        return scheme, key.strip()
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    if len(offered) == 2 and offered[0].lower() in ("token", "bearer"):
        return "subprotocol", offered[1]
    return None, None


def _select_subprotocol(
    connection: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    """Accept `token`/`bearer` when the key travels in `Sec-WebSocket-Protocol`."""
    return next((p for p in offered if p.lower() in ("token", "bearer")), None)


class _Stream:
    """One accepted connection: reads audio and control messages, answers through an outbox."""

    def __init__(self, fake: DeepgramFake, ws: ServerConnection, record: DeepgramConnection):
        self.fake = fake
        self.ws = ws
        self.record = record
        params = record.params
        self.rate = int(params.get("sample_rate", "16000"))
        self.channels = int(params.get("channels", "1"))
        self.linear16 = params.get("encoding", "linear16") == "linear16"
        self.detector = EnergyDetector(
            rate=self.rate,
            threshold=fake.threshold,
            start_ms=fake.start_ms,
            silence_ms=fake.silence_ms,
        )
        self.speech_start: float | None = None
        self.outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    @property
    def clock(self) -> float:
        """Seconds of audio received so far."""
        return len(self.record.audio) / (2 * self.rate * self.channels)

    async def run(self) -> None:
        sender = asyncio.create_task(self._send_loop(), name="deepgram-fake-sender")
        try:
            async for message in self.ws:
                if isinstance(message, bytes):
                    await self._on_audio(message)
                else:
                    await self._on_control(message)
                await self.fake.recorder.changed()
        except ConnectionClosed:
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            if self.ws.close_code is not None:
                self.record.close_code = self.ws.close_code
                self.record.close_reason = self.ws.close_reason

    async def _on_audio(self, pcm: bytes) -> None:
        self.record.audio += pcm
        self.record.audio_frames += 1
        if await self._maybe_fault():
            return
        if not self.linear16:
            return
        frame_seconds = len(pcm) / (2 * self.rate * self.channels)
        for activity in self.detector.feed(pcm):
            if activity is Activity.SPEECH_STARTED:
                self.speech_start = max(0.0, self.clock - frame_seconds)
                if self.record.params.get("vad_events") == "true":
                    self._post(speech_started(self.speech_start))
            elif activity is Activity.SPEECH_ENDED:
                self._finish_utterance("silence")

    async def _on_control(self, text: str) -> None:
        message = json.loads(text)
        self.record.messages.append(message)
        kind = message.get("type")
        if kind == "Finalize":
            if not self._finish_utterance("finalize", from_finalize=True):
                self._post(self._results("", self.clock, 0.0, final=True, from_finalize=True))
        elif kind == "CloseStream":
            self._finish_utterance("close_stream")
            self._post(self._metadata())
            self.outbox.put_nowait(None)

    def _finish_utterance(self, cause: str, *, from_finalize: bool = False) -> bool:
        """Send interim and final results for the speech in progress; False if there was none."""
        if self.speech_start is None:
            return False
        start, end = self.speech_start, self.clock
        self.speech_start = None
        self.detector.reset()
        transcript = self.fake.transcript
        self.record.utterances.append(Utterance(start, end, transcript, cause))
        params = self.record.params
        if params.get("interim_results") == "true":
            words = transcript.split()
            partial = " ".join(words[: max(1, len(words) // 2)])
            self._post(self._results(partial, start, end - start, final=False))
        final = self._results(transcript, start, end - start, final=True)
        final["from_finalize"] = from_finalize
        self._post(final)
        if "utterance_end_ms" in params:
            self._post({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": end})
        return True

    def _results(
        self,
        transcript: str,
        start: float,
        duration: float,
        *,
        final: bool,
        from_finalize: bool = False,
    ) -> dict[str, Any]:
        return results_message(
            transcript,
            start,
            duration,
            is_final=final,
            speech_final=final and not from_finalize,
            from_finalize=from_finalize,
            request_id=self.record.request_id,
        )

    def _metadata(self) -> dict[str, Any]:
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.record.request_id,
            "sha256": hashlib.sha256(self.record.audio).hexdigest(),
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
            "duration": round(self.clock, 3),
            "channels": self.channels,
        }

    def _post(self, message: dict[str, Any]) -> None:
        self.outbox.put_nowait(message)

    async def _send_loop(self) -> None:
        while True:
            message = await self.outbox.get()
            if message is None:
                await self.ws.close(CloseCode.NORMAL_CLOSURE)
                return
            if message["type"] == "Results" and self.fake.result_delay:
                await asyncio.sleep(self.fake.result_delay)
            await self.ws.send(json.dumps(message))
            self.record.sent.append(message)
            await self.fake.recorder.changed()

    async def _maybe_fault(self) -> bool:
        for fault in self.fake.faults:
            if not fault.fired and len(self.record.audio) >= fault.after_audio_bytes:
                fault.fired = True
                if fault.drop:
                    self.ws.transport.abort()
                else:
                    await self.ws.close(fault.code, fault.reason)
                return True
        return False


def results_message(
    transcript: str,
    start: float,
    duration: float,
    *,
    is_final: bool,
    speech_final: bool,
    from_finalize: bool,
    request_id: str,
) -> dict[str, Any]:
    """A `Results` message shaped like Deepgram's, words spread evenly over the duration."""
    words = transcript.split()
    step = duration / len(words) if words else 0.0
    return {
        "type": "Results",
        "channel_index": [0, 1],
        "duration": round(duration, 3),
        "start": round(start, 3),
        "is_final": is_final,
        "speech_final": speech_final,
        "from_finalize": from_finalize,
        "channel": {
            "alternatives": [
                {
                    "transcript": transcript,
                    "confidence": 0.99,
                    "words": [
                        {
                            "word": word.strip(".,?!").lower(),
                            "start": round(start + i * step, 3),
                            "end": round(start + (i + 1) * step, 3),
                            "confidence": 0.99,
                            "punctuated_word": word,
                        }
                        for i, word in enumerate(words)
                    ],
                }
            ]
        },
        "metadata": {
            "request_id": request_id,
            "model_info": MODEL_INFO,
            "model_uuid": "00000000-0000-4000-8000-000000000003",
        },
    }


def speech_started(timestamp: float) -> dict[str, Any]:
    """A `SpeechStarted` message (sent when the client asked for `vad_events=true`)."""
    return {"type": "SpeechStarted", "channel": [0, 1], "timestamp": round(timestamp, 3)}
