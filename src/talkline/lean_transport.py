"""The client's audio path, lean: pushed as it is read, and past the user aggregator's queue.

Pipecat's input transport puts each audio frame read from the socket in a queue, and a task
of its own takes it out (through ``asyncio.wait_for``, for a no-audio warning) to push it
on. With no input filter that task only forwards: one more queue, task switch and timeout
per 32 ms chunk. ``LeanInputTransport`` pushes the frame from the receiving task instead,
in the order it was read; with an audio filter, Pipecat's own path is kept.
``LeanUserAggregator`` then hands each chunk to the brain and to the VAD from that same
task, instead of through its own queue and task (see its docstring).
"""

from __future__ import annotations

from typing import Any

from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    StartFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMAssistantAggregator,
    LLMAssistantAggregatorParams,
    LLMUserAggregator,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameCallback, FrameDirection
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
    (LLMUserAggregator, "_maybe_mute_frame", "calls", "audio is muted as Pipecat mutes it"),
    (LLMUserAggregator, "_vad_controller", "reads", "the VAD each audio chunk goes to"),
    (LLMUserAggregator, "_user_turn_controller", "reads", "the turn strategies see audio"),
    (LLMUserAggregator, "_user_idle_controller", "reads", "the idle timer sees audio"),
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


class LeanUserAggregator(LLMUserAggregator):
    """Pipecat's user aggregator, with the client's audio handled by the task that pushed it.

    Each 32 ms chunk would otherwise wait in this aggregator's input queue for its task,
    and then go through the whole frame dispatch (an observer report, the mute check, a
    chain of type tests, a push with another observer report) only to be handed to the
    VAD and pushed on unchanged. Here a chunk goes to the next processor at once (for the
    Gemini brain: sent upstream) and then to the same VAD, turn and idle controllers, in
    the same order as Pipecat's ``process_frame`` does. The speech events the VAD raises
    still go through this aggregator's queue (Pipecat queues them itself), so they keep
    their order among the other frames.

    Pipecat's queued path is kept before the pipeline has started, after it ends, while
    the aggregator's frames are paused, and for any audio frame with a callback.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._lean_open = False  # started, not ending, not paused
        self._lean_paused = False
        self.lean_frames = 0  # audio frames that took the lean path (tests read it)

    async def queue_frame(
        self,
        frame: Frame,
        direction: FrameDirection = FrameDirection.DOWNSTREAM,
        callback: FrameCallback | None = None,
    ) -> None:
        if (
            isinstance(frame, InputAudioRawFrame)
            and callback is None
            and direction == FrameDirection.DOWNSTREAM
            and self._lean_open
            and not self._lean_paused
        ):
            await self._handle_audio_now(frame)
            return
        if isinstance(frame, EndFrame | CancelFrame):
            self._lean_open = False
        await super().queue_frame(frame, direction, callback)

    async def _handle_audio_now(self, frame: InputAudioRawFrame) -> None:
        """What ``process_frame`` does with an audio frame, minus the queue and dispatch."""
        self.lean_frames += 1
        if await self._maybe_mute_frame(frame):
            return
        if self.next is not None:
            await self.next.queue_frame(frame, FrameDirection.DOWNSTREAM)
        if self._vad_controller:
            await self._vad_controller.process_frame(frame)
        await self._user_turn_controller.process_frame(frame)
        await self._user_idle_controller.process_frame(frame)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            self._lean_open = True

    async def pause_processing_system_frames(self) -> None:
        self._lean_paused = True
        await super().pause_processing_system_frames()

    async def resume_processing_system_frames(self) -> None:
        self._lean_paused = False
        await super().resume_processing_system_frames()


def lean_aggregator_pair(
    context: LLMContext, user_params: LLMUserAggregatorParams
) -> tuple[LeanUserAggregator, LLMAssistantAggregator]:
    """``LLMContextAggregatorPair(context, user_params=...)`` with a ``LeanUserAggregator``.

    The assistant half holds a reference to its user half, as Pipecat's pair wires it (in
    realtime mode the assistant flushes the user's words when the answer starts).
    """
    user = LeanUserAggregator(context, params=user_params)
    assistant = LLMAssistantAggregator(
        context, params=LLMAssistantAggregatorParams(), _paired_user_aggregator=user
    )
    return user, assistant
