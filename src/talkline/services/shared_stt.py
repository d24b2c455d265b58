"""What the offline recognizers (Whisper, Moonshine) share: one model per process, borrowed
by every session's service in a bounded slot, off the event loop.

A recognizer's service mixes ``SharedModelSTT`` in before its Pipecat base and says, in
``transcribe``, how its shared model reads one utterance.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Protocol

from loguru import logger
from pipecat.frames.frames import ErrorFrame, Frame, TranscriptionFrame
from pipecat.services.stt_service import SegmentedSTTService, STTService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

# --- Pipecat internals this module relies on -----------------------------------------------
# (owner, name, kind, why), checked by tests/test_pipecat_contract.py.
PIPECAT_PRIVATE: tuple[tuple[type, str, str, str], ...] = (
    (SegmentedSTTService, "_cancel_segment_task", "calls", "end the task with the pipeline"),
    (STTService, "_user_id", "reads", "the speaker of a transcription"),
)


class SharedModel(Protocol):
    """A process-wide model and the slots that bound its concurrency."""

    slots: asyncio.Semaphore


class SharedModelSTT(SegmentedSTTService):
    """Transcribes each utterance with the process's shared model, in one of its slots."""

    _shared: SharedModel

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
