"""Pipecat's FastAPI WebSocket transport, with fewer task hops for audio either way.

Pipecat's input transport puts each audio frame read from the socket in a queue, and a task
of its own takes it out (through ``asyncio.wait_for``, for a no-audio warning) to push it
on. With no input filter that task only forwards: one more queue, task switch and timeout
per 32 ms chunk. ``LeanInputTransport`` pushes the frame from the receiving task instead,
in the order it was read; with an audio filter, Pipecat's own path is kept.

On the way out, Pipecat's media sender takes each frame from its audio queue, and writes
each chunk of bot audio, through ``asyncio.wait_for``, which on Python 3.11 runs the awaited
call in a task of its own: every frame waited a loop iteration (two, for audio) behind every
other ready task (the rest of a reply being parsed, the bookkeeping of the bot starting to
speak). The first chunk of a reply came third in the queue, after the TTS and LLM start
frames, so it left several iterations late. ``LeanMediaSender`` takes and writes from its
audio task itself, under the same timeouts (``asyncio.timeout``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from pipecat.frames.frames import Frame, InputAudioRawFrame, OutputAudioRawFrame, StartFrame
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BOT_VAD_STOP_FALLBACK_SECS, BaseOutputTransport
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketInputTransport,
    FastAPIWebsocketOutputTransport,
    FastAPIWebsocketTransport,
)

MediaSender = BaseOutputTransport.MediaSender

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
    (FastAPIWebsocketTransport, "_output", "reads", "replaced by LeanOutputTransport"),
    (FastAPIWebsocketTransport, "_output_name", "reads", "the output's name, as Pipecat's"),
    (BaseOutputTransport, "_media_senders", "reads", "each becomes a LeanMediaSender"),
    (MediaSender, "_internal_write_audio_frame", "override", "write without a task hop"),
    (MediaSender, "_next_frame", "override", "take queued frames without a task hop"),
    (MediaSender, "_transport", "reads", "the output transport it writes to"),
    (MediaSender, "_params", "reads", "the write timeout"),
    (MediaSender, "_mixer", "reads", "with a mixer, Pipecat's own _next_frame"),
    (MediaSender, "_audio_queue", "reads", "what the audio task plays"),
    (MediaSender, "_filter_audio", "calls", "as Pipecat's _next_frame does"),
    (MediaSender, "_apply_volume", "calls", "as Pipecat's _next_frame does"),
    (MediaSender, "_bot_stopped_speaking", "calls", "queue idle: as Pipecat's _next_frame"),
)


class LeanInputTransport(FastAPIWebsocketInputTransport):
    """Client audio goes on from the task that read it, not through an audio queue."""

    async def push_audio_frame(self, frame: InputAudioRawFrame) -> None:
        params = self._params
        if params.audio_in_filter is not None or not params.audio_in_passthrough:
            await super().push_audio_frame(frame)
        elif params.audio_in_enabled and not self._paused and frame.audio:
            await self.push_frame(frame)


class LeanMediaSender(MediaSender):
    """Pipecat's media sender, whose audio task takes and writes frames without a task each."""

    def _next_frame(self) -> AsyncGenerator[Frame, None]:
        if self._mixer:
            return super()._next_frame()
        return self._queued_frames(BOT_VAD_STOP_FALLBACK_SECS)

    async def _queued_frames(self, vad_stop_secs: float) -> AsyncGenerator[Frame, None]:
        """Pipecat's ``_next_frame`` without a mixer, with ``asyncio.timeout``."""
        while True:
            queue = self._audio_queue
            try:
                async with asyncio.timeout(vad_stop_secs):
                    frame = await queue.get()
                await self._filter_audio(frame)
                self._apply_volume(frame)
                yield frame
                queue.task_done()
            except TimeoutError:
                # Nothing to play for a while: the bot has stopped speaking if it had not.
                await self._bot_stopped_speaking()

    async def _internal_write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        """Pipecat's write, with ``asyncio.timeout`` in place of ``asyncio.wait_for``."""
        transport = self._transport
        if not transport.is_usable:
            return False
        timeout = self._params.audio_out_write_timeout_secs
        try:
            async with asyncio.timeout(timeout):
                return await transport.write_audio_frame(frame)
        except TimeoutError as e:
            await transport.push_error(
                f"{transport} timed out after {timeout}s writing audio to the "
                "transport; the peer has stopped reading",
                exception=e,
                force_treat_as_permanent=True,
            )
            return False


class LeanOutputTransport(FastAPIWebsocketOutputTransport):
    """Pipecat's FastAPI WebSocket output whose media senders are ``LeanMediaSender``s."""

    async def set_transport_ready(self, frame: StartFrame) -> None:
        await super().set_transport_ready(frame)
        for sender in self._media_senders.values():
            # Pipecat builds them as ``BaseOutputTransport.MediaSender``; the subclass only
            # changes methods. Their audio tasks have been created but have not run yet
            # (nothing above yields; Pipecat's own ``_mixer``, set after the task is
            # created, relies on the same), so they start in ``LeanMediaSender._next_frame``.
            sender.__class__ = LeanMediaSender


class LeanWebsocketTransport(FastAPIWebsocketTransport):
    """Pipecat's FastAPI WebSocket transport with ``LeanInputTransport`` and
    ``LeanOutputTransport``."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._input = LeanInputTransport(self, self._client, self._params, name=self._input_name)
        self._output = LeanOutputTransport(self, self._client, self._params, name=self._output_name)
