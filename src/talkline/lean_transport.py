"""Pipecat's FastAPI WebSocket transport, with the client's audio pushed as it is read.

Pipecat's input transport puts each audio frame read from the socket in a queue, and a task
of its own takes it out (through ``asyncio.wait_for``, for a no-audio warning) to push it
on. With no input filter that task only forwards: one more queue, task switch and timeout
per 32 ms chunk. ``LeanInputTransport`` pushes the frame from the receiving task instead,
in the order it was read; with an audio filter, Pipecat's own path is kept.
"""

from __future__ import annotations

from typing import Any

from pipecat.frames.frames import InputAudioRawFrame
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketInputTransport,
    FastAPIWebsocketTransport,
)

# --- Pipecat internals this module relies on -----------------------------------------------
# tests/test_pipecat_contract.py checks each entry against the installed Pipecat. Using
# another private name means adding it here. (owner, name, kind, why)
PIPECAT_PRIVATE: tuple[tuple[type, str, str, str], ...] = (
    (BaseInputTransport, "_params", "reads", "audio enabled, filter, passthrough"),
    (BaseInputTransport, "_paused", "reads", "paused input drops audio, as Pipecat's does"),
    (FastAPIWebsocketTransport, "_input", "reads", "replaced by LeanInputTransport"),
    (FastAPIWebsocketTransport, "_client", "reads", "what the input reads from"),
    (FastAPIWebsocketTransport, "_params", "reads", "the transport's params, for the input"),
    (FastAPIWebsocketTransport, "_input_name", "reads", "the input's name, as Pipecat names it"),
)


class LeanInputTransport(FastAPIWebsocketInputTransport):
    """Client audio goes on from the task that read it, not through an audio queue."""

    async def push_audio_frame(self, frame: InputAudioRawFrame) -> None:
        params = self._params
        if params.audio_in_filter is not None or not params.audio_in_passthrough:
            await super().push_audio_frame(frame)
        elif params.audio_in_enabled and not self._paused and frame.audio:
            await self.push_frame(frame)


class LeanWebsocketTransport(FastAPIWebsocketTransport):
    """Pipecat's FastAPI WebSocket transport whose input is a ``LeanInputTransport``."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._input = LeanInputTransport(self, self._client, self._params, name=self._input_name)
