"""What stands between a client's WebSocket and Pipecat's transport.

Pipecat's FastAPI transport ends the session when the serializer raises (a text message,
bytes that are not a protobuf ``Frame``), and accepts any frame type from the client.
``GuardedSerializer`` turns every kind of bad input into a clear RTVI ``error`` and drops
it, so the session goes on, and converts client audio of any common rate and channel count
to the pipeline's rate in mono (``talkline.audio_in``). ``SessionSocket`` lets the session
choose the close code and reason that Pipecat's transport uses when it closes the socket.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from enum import Enum
from typing import Any

import pipecat.frames.protobufs.frames_pb2 as frame_protos
from fastapi import WebSocket, WebSocketDisconnect
from google.protobuf.message import DecodeError
from loguru import logger
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    TextFrame,
    TranscriptionFrame,
)
from pipecat.serializers.protobuf import ProtobufFrameSerializer
from starlette import status

from talkline.audio_in import AudioConverter

ERRORS_PER_SECOND = 5
CLIENT_RATES = (8000, 96000)  # the client audio rates converted, in Hz; others are refused
MAX_CHANNELS = 8
ALLOWED_FROM_CLIENT = {"audio", "message"}
SENT_TO_CLIENTS = (
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    TextFrame,
    TranscriptionFrame,
)

Report = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class InputLimits:
    """What one client may send."""

    sample_rate: int = 16000  # the pipeline's: client audio is converted to it
    max_message_bytes: int = 64 * 1024
    max_audio_rate: float = 1.5  # times real time, averaged from the first audio frame
    audio_burst_secs: float = 3.0
    max_messages_per_second: float = 200.0


class RateGuard:
    """Notices a client that sends audio much faster than real time, or floods messages."""

    def __init__(self, limits: InputLimits):
        self._limits = limits
        self._audio_start: float | None = None
        self._audio_secs = 0.0
        self._tokens = limits.max_messages_per_second
        self._refilled = time.monotonic()

    def message(self) -> str | None:
        now = time.monotonic()
        rate = self._limits.max_messages_per_second
        self._tokens = min(rate, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        self._tokens -= 1
        if self._tokens < 0:
            return f"more than {rate:g} messages per second"
        return None

    def audio(self, num_bytes: int, sample_rate: int, channels: int) -> str | None:
        """Counts ``num_bytes`` of 16-bit audio in its own rate and channel count."""
        now = time.monotonic()
        if self._audio_start is None:
            self._audio_start = now
        self._audio_secs += num_bytes / (2 * channels * sample_rate)
        elapsed = now - self._audio_start
        if self._audio_secs > elapsed * self._limits.max_audio_rate + self._limits.audio_burst_secs:
            return (
                f"audio arrives faster than real time ({self._audio_secs:.1f} s of audio in "
                f"{elapsed:.1f} s; at most {self._limits.max_audio_rate:g}x)"
            )
        return None


class GuardedSerializer(ProtobufFrameSerializer):
    """Pipecat's protobuf serializer that reports bad input instead of raising.

    ``report`` tells the client what was wrong (the session goes on); ``violate`` is called
    when the client breaks a rate limit, to close the session with a policy violation. Input
    is dropped unread once ``accepting()`` says the session no longer takes any.
    """

    def __init__(
        self,
        *,
        limits: InputLimits,
        report: Report,
        violate: Report,
        accepting: Callable[[], bool] = lambda: True,
    ):
        super().__init__()
        self._limits = limits
        self._report = report
        self._violate = violate
        self._rates = RateGuard(limits)
        self._accepting = accepting
        self._converter = AudioConverter(limits.sample_rate)
        self._window_start = 0.0
        self._errors_in_window = 0
        self.bad_inputs = 0
        self.audio_in = 0
        self.audio_out = 0

    async def serialize(self, frame: Frame) -> str | bytes | None:
        # Not InterruptionFrame: the official JS clients have no such frame and warn on every
        # one; they learn of interruptions from the RTVI "bot-interrupted" message instead.
        if isinstance(frame, OutputAudioRawFrame):
            self.audio_out += 1
        elif not isinstance(frame, SENT_TO_CLIENTS):
            return None  # lifecycle frames (End, Cancel) have no wire form: nothing to warn about
        return await super().serialize(frame)

    async def deserialize(self, data: str | bytes) -> Frame | None:
        if not self._accepting():
            return None
        violation = self._rates.message()
        frame = None if violation else await self._deserialize(data)
        if isinstance(frame, InputAudioRawFrame):
            self.audio_in += 1
            violation = self._rates.audio(len(frame.audio), frame.sample_rate, frame.num_channels)
            frame = None if violation else self._converted(frame)
        if violation:
            await self._violation(violation)
        return frame

    def _converted(self, frame: InputAudioRawFrame) -> InputAudioRawFrame | None:
        """``frame`` at the pipeline's rate in mono, or None while the resampler fills."""
        audio = self._converter.convert(frame.audio, frame.sample_rate, frame.num_channels)
        if audio is frame.audio:
            return frame
        if not audio:
            return None
        return InputAudioRawFrame(audio=audio, sample_rate=self._converter.rate, num_channels=1)

    async def _violation(self, problem: str) -> None:
        logger.warning(f"closing: {problem}")
        await self._violate(problem)

    async def _deserialize(self, data: str | bytes) -> Frame | None:
        problem = self._check_envelope(data)
        if problem is None:
            assert isinstance(data, bytes)
            frame, problem = await self._decode(data)
            if frame is not None:
                return frame
        await self._reject(problem or "the message could not be read")
        return None

    def _check_envelope(self, data: str | bytes) -> str | None:
        if isinstance(data, str):
            return (
                "text WebSocket messages are not accepted: send binary protobuf Frames "
                "(RTVI messages go in Frame.message.data)"
            )
        limit = self._limits.max_message_bytes
        if len(data) > limit:
            return f"message of {len(data)} bytes is over the {limit} byte limit"
        return None

    async def _decode(self, data: bytes) -> tuple[Frame | None, str | None]:
        try:
            proto = frame_protos.Frame.FromString(  # type: ignore[attr-defined]
                data
            )
        except (DecodeError, ValueError):
            return None, "the message is not a valid protobuf Frame"
        kind = proto.WhichOneof("frame")
        if kind is None:
            return None, "the Frame is empty: expected audio or message"
        if kind not in ALLOWED_FROM_CLIENT:
            return None, f"'{kind}' frames are not accepted from clients (audio or message only)"
        if kind == "audio":
            return self._audio(proto.audio)
        return self._message(proto.message.data)

    def _audio(self, audio: Any) -> tuple[Frame | None, str | None]:
        """The client's audio as sent, if its format is one that can be converted."""
        problem = self._audio_problem(audio.sample_rate, audio.num_channels, len(audio.audio))
        if problem:
            return None, problem
        frame = InputAudioRawFrame(
            audio=audio.audio, sample_rate=audio.sample_rate, num_channels=audio.num_channels
        )
        return frame, None

    def _audio_problem(self, rate: int, channels: int, size: int) -> str | None:
        low, high = CLIENT_RATES
        if not low <= rate <= high:
            return f"audio at {rate} Hz is not supported: send {low} to {high} Hz"
        most = MAX_CHANNELS
        if not 1 <= channels <= most:
            return f"audio with {channels} channels is not supported: send 1 to {most}"
        if not size or size % (2 * channels):
            return (
                f"audio of {size} bytes is not whole 16-bit samples "
                f"for {channels} channel{'s' if channels > 1 else ''}"
            )
        return None

    def _message(self, data: str) -> tuple[Frame | None, str | None]:
        try:
            message = json.loads(data)
        except ValueError:
            return None, "Frame.message.data is not JSON"
        if not isinstance(message, dict):
            return None, "an RTVI message must be a JSON object"
        if message.get("label") != "rtvi-ai" or not isinstance(message.get("type"), str):
            return None, 'an RTVI message needs "label": "rtvi-ai" and a string "type"'
        if "data" in message and not isinstance(message["data"], dict | None):
            return None, f"RTVI '{message['type']}': \"data\" must be an object"
        return InputTransportMessageFrame(message=message), None

    async def _reject(self, problem: str) -> None:
        self.bad_inputs += 1
        now = time.monotonic()
        if now - self._window_start >= 1.0:
            self._window_start, self._errors_in_window = now, 0
        self._errors_in_window += 1
        if self._errors_in_window > ERRORS_PER_SECOND:
            return  # a flood: keep serving, stop echoing every mistake
        logger.info(f"bad input: {problem}")
        await self._report(f"Bad input: {problem}. The session continues.")


class SocketState(Enum):
    OPEN = "open"
    STALLED = "stalled"  # a send timed out: later sends are dropped
    CLOSED = "closed"


class SessionSocket:
    """A WebSocket with bounded writes, whose ``close()`` uses the session's code and reason.

    A client that stops reading fills the socket buffers until a send blocks; a send that
    takes longer than ``write_timeout`` is abandoned, later sends are dropped, and
    ``on_stalled`` is called once so the session can end.
    """

    def __init__(
        self,
        websocket: WebSocket,
        *,
        write_timeout: float = 5.0,
        on_stalled: Callable[[], None] = lambda: None,
    ):
        self._websocket = websocket
        self._write_timeout = write_timeout
        self._on_stalled = on_stalled
        self.close_code = status.WS_1000_NORMAL_CLOSURE
        self.close_reason = ""
        self.client_close_code: int | None = None  # how the client closed, when it did
        self.state = SocketState.OPEN

    async def receive(self) -> Any:
        """The next ASGI message; a disconnect's code tells a normal close from a drop."""
        message = await self._websocket.receive()
        if message["type"] == "websocket.disconnect":
            self.client_close_code = message.get("code", status.WS_1006_ABNORMAL_CLOSURE)
        return message

    async def send_bytes(self, data: bytes) -> None:
        await self._send(self._websocket.send_bytes(data))

    async def send_text(self, data: str) -> None:
        await self._send(self._websocket.send_text(data))

    async def _send(self, sending: Coroutine[Any, Any, None]) -> None:
        if self.state is not SocketState.OPEN:
            sending.close()
            return
        try:
            # Not ``asyncio.wait_for``: on Python 3.11 it runs the send in a task of its own,
            # which starts only after every other task that is ready (a loop iteration
            # behind the rest of the burst, for each message sent to the client).
            async with asyncio.timeout(self._write_timeout):
                await sending
        except TimeoutError:
            self.state = SocketState.STALLED
            logger.warning(f"client has not read for {self._write_timeout:g} s")
            self._on_stalled()

    def set_close(self, code: int, reason: str) -> None:
        self.close_code, self.close_reason = code, reason[:123]

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        if self.state is SocketState.CLOSED:
            return
        self.state = SocketState.CLOSED
        closing = self._websocket.close(code or self.close_code, reason or self.close_reason)
        try:
            await asyncio.wait_for(closing, self._write_timeout)
        except (RuntimeError, WebSocketDisconnect, TimeoutError) as error:  # the peer left
            logger.debug(f"close after disconnect: {error!r}")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._websocket, name)
