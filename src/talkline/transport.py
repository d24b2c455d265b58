"""What stands between a client's WebSocket and Pipecat's transport.

Pipecat's FastAPI transport ends the session when the serializer raises (a text message,
bytes that are not a protobuf ``Frame``), and accepts any frame type from the client.
``GuardedSerializer`` turns every kind of bad input into a clear RTVI ``error`` and drops
it, so the session goes on. ``SessionSocket`` lets the session choose the close code and
reason that Pipecat's transport uses when it closes the socket.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pipecat.frames.protobufs.frames_pb2 as frame_protos
from fastapi import WebSocket, WebSocketDisconnect
from google.protobuf.message import DecodeError
from loguru import logger
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
    InterruptionFrame,
)
from pipecat.serializers.protobuf import ProtobufFrameSerializer
from starlette import status

ERRORS_PER_SECOND = 5
ALLOWED_FROM_CLIENT = {"audio", "message"}

ReportBadInput = Callable[[str], Awaitable[None]]


class GuardedSerializer(ProtobufFrameSerializer):
    """Pipecat's protobuf serializer that reports bad input instead of raising."""

    def __init__(self, *, sample_rate: int, max_message_bytes: int, report: ReportBadInput):
        super().__init__()
        self._sample_rate = sample_rate
        self._max_message_bytes = max_message_bytes
        self._report = report
        self._window_start = 0.0
        self._errors_in_window = 0
        self.bad_inputs = 0

    async def serialize(self, frame: Frame) -> str | bytes | None:
        # The official JS clients have no InterruptionFrame and warn on every one; they
        # learn of interruptions from the RTVI "bot-interrupted" message instead.
        if isinstance(frame, InterruptionFrame):
            return None
        return await super().serialize(frame)

    async def deserialize(self, data: str | bytes) -> Frame | None:
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
        if len(data) > self._max_message_bytes:
            return f"message of {len(data)} bytes is over the {self._max_message_bytes} byte limit"
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
        if audio.sample_rate != self._sample_rate:
            return None, (
                f"audio at {audio.sample_rate} Hz is not supported: send {self._sample_rate} Hz"
            )
        if audio.num_channels != 1:
            return None, f"audio with {audio.num_channels} channels is not supported: send mono"
        if not audio.audio or len(audio.audio) % 2:
            return None, f"audio of {len(audio.audio)} bytes is not whole 16-bit samples"
        frame = InputAudioRawFrame(audio=audio.audio, sample_rate=audio.sample_rate, num_channels=1)
        return frame, None

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


class SessionSocket:
    """A WebSocket whose ``close()`` uses the code and reason the session chose."""

    def __init__(self, websocket: WebSocket):
        self._websocket = websocket
        self.close_code = status.WS_1000_NORMAL_CLOSURE
        self.close_reason = ""
        self.closed = False

    def set_close(self, code: int, reason: str) -> None:
        self.close_code, self.close_reason = code, reason[:123]

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await self._websocket.close(code or self.close_code, reason or self.close_reason)
        except (RuntimeError, WebSocketDisconnect) as error:  # the peer left first
            logger.debug(f"close after disconnect: {error}")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._websocket, name)
