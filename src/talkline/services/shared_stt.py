"""What the offline recognizers (Whisper, Moonshine) share: one model per process, borrowed
by every session's service in a bounded slot, off the event loop, and segments cut where
the VAD heard the speech begin and end.

A recognizer's service mixes ``SharedModelSTT`` in before its Pipecat base and says, in
``transcribe``, how its shared model reads one utterance.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Protocol

from loguru import logger
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    TranscriptionFrame,
    UserAudioRawFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.stt_service import SegmentedSTTService, STTService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

# --- Pipecat internals this module relies on -----------------------------------------------
# (owner, name, kind, why), checked by tests/test_pipecat_contract.py.
PIPECAT_PRIVATE: tuple[tuple[type, str, str, str], ...] = (
    (SegmentedSTTService, "_cancel_segment_task", "calls", "end the task with the pipeline"),
    (STTService, "_user_id", "reads", "the speaker of a transcription"),
    (SegmentedSTTService, "_audio_buffer", "reads", "the audio kept for the next segment"),
    (SegmentedSTTService, "_audio_buffer_size_1s", "reads", "the audio kept before speech"),
    (SegmentedSTTService, "_user_speaking", "reads", "whether a segment is open"),
    (SegmentedSTTService, "_handle_user_stopped_speaking", "override", "cut where the VAD was"),
)

# Audio kept for a VAD that has fallen this far behind (a stalled pipeline); older goes.
MAX_UNHEARD_SECS = 30.0


class ListeningPosition(Protocol):
    """How far into the session's audio the VAD after the recognizer has listened."""

    analyzed_bytes: int


class SharedModel(Protocol):
    """A process-wide model and the slots that bound its concurrency."""

    slots: asyncio.Semaphore


class SharedModelSTT(SegmentedSTTService):
    """Transcribes each utterance with the process's shared model, in one of its slots.

    Pipecat's segmented recognizer keeps the last second of audio until the VAD says the
    user started speaking, and cuts the segment when it says they stopped. The VAD runs in
    the user aggregator after this service, and its events come back upstream: when the
    audio arrives faster than the pipeline reads it (a client's network delivering a second
    or two at once, a stalled event loop), the start comes back after more than a second of
    the speech has passed and the segment loses its first words ("What is the weather like
    in Paris today?" heard as "Today."). Once it ``follow``s the VAD, this service keeps
    the audio the VAD has not yet heard and cuts each segment where the VAD was in the
    audio when it decided, so bursts lose nothing.
    """

    _shared: SharedModel
    _vad: ListeningPosition | None = None
    _received_bytes = 0

    def follow(self, vad: ListeningPosition) -> None:
        """Cut segments by ``vad``'s position in the audio (it hears every frame pushed on)."""
        self._vad = vad

    def transcribe(self, audio: bytes) -> str:
        """One utterance (16-bit PCM at ``self.sample_rate``) in words; runs on a thread."""
        raise NotImplementedError

    async def cleanup(self) -> None:
        # Pipecat's SegmentedSTTService starts its transcription task in start(); a session
        # cancelled before its StartFrame reached this service (a client that connects and
        # leaves at once) has cancel() run first, and the task started afterwards was left
        # running forever. Whatever the order, the task ends with the pipeline.
        await self._cancel_segment_task()
        await super().cleanup()

    async def process_audio_frame(self, frame: InputAudioRawFrame, direction: FrameDirection):
        if self._vad is None:
            await super().process_audio_frame(frame, direction)
            return
        self._user_id = frame.user_id if isinstance(frame, UserAudioRawFrame) else ""
        self._audio_buffer += frame.audio
        self._received_bytes += len(frame.audio)
        if not self._user_speaking:
            self._keep_unheard()

    def _keep_unheard(self) -> None:
        """Keep the audio the VAD has not heard, and a second of what it has heard."""
        assert self._vad is not None
        buffered_from = self._received_bytes - len(self._audio_buffer)
        keep_from = self._vad.analyzed_bytes - self._audio_buffer_size_1s
        limit = int(MAX_UNHEARD_SECS * self._audio_buffer_size_1s)
        drop = max(keep_from - buffered_from, len(self._audio_buffer) - limit, 0)
        del self._audio_buffer[: min(drop, len(self._audio_buffer))]

    async def _handle_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame):
        """The segment ends where the VAD was when it decided; later audio stays for the next."""
        if self._vad is None:
            await super()._handle_user_stopped_speaking(frame)
            return
        unheard = self._received_bytes - self._vad.analyzed_bytes
        cut = min(max(len(self._audio_buffer) - unheard, 0), len(self._audio_buffer))
        later = bytes(self._audio_buffer[cut:])
        del self._audio_buffer[cut:]
        await super()._handle_user_stopped_speaking(frame)  # transcribes and clears the buffer
        self._audio_buffer += later
        self._keep_unheard()

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        """Transcribe one utterance in a shared slot; a failure is an error frame, not a crash."""
        await self.start_processing_metrics()
        try:
            async with self._shared.slots:
                text = await asyncio.to_thread(self.transcribe, audio)
        except Exception as error:  # a broken model must not end the session
            logger.exception("transcription failed")
            yield ErrorFrame(f"Speech recognition failed: {error}")
            return
        finally:
            await self.stop_processing_metrics()
        if text:
            logger.debug(f"Transcription: [{text}]")
            yield TranscriptionFrame(text, self._user_id, time_now_iso8601(), Language.EN)
