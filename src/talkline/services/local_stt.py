"""Whisper speech-to-text with one model per process, shared by all sessions.

Pipecat's ``WhisperSTTService`` loads a model per instance (about 100 MB each for
``tiny.en``). Here the CTranslate2 model is loaded once; a semaphore bounds how many
transcriptions run at once so a burst of sessions queues instead of oversubscribing the
CPU.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from pathlib import Path

from faster_whisper import WhisperModel
from loguru import logger
from pipecat.frames.frames import ErrorFrame, Frame
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.transcriptions.language import Language


class SharedWhisper:
    """The process-wide Whisper model and the slots that bound its concurrency."""

    def __init__(self, model_path: str, *, compute_type: str, concurrency: int, threads: int):
        if not Path(model_path, "model.bin").is_file():
            raise FileNotFoundError(f"no Whisper model (model.bin) in {model_path}")
        self.model_path = model_path
        self.model = WhisperModel(
            model_path,
            device="cpu",
            compute_type=compute_type,
            cpu_threads=threads,
            num_workers=concurrency,
            local_files_only=True,
        )
        self.slots = asyncio.Semaphore(concurrency)
        logger.info(f"Whisper model loaded from {model_path} ({compute_type}, {concurrency} slots)")


class SharedWhisperSTTService(WhisperSTTService):
    """Pipecat's Whisper service, borrowing the shared model instead of loading one."""

    def __init__(self, shared: SharedWhisper, **kwargs):
        self._shared = shared
        super().__init__(
            settings=WhisperSTTService.Settings(model=shared.model_path, language=Language.EN),
            device="cpu",
            **kwargs,
        )

    def _load(self) -> None:
        self._model = self._shared.model

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        try:
            async with self._shared.slots:
                async for frame in super().run_stt(audio):
                    yield frame
        except Exception as error:  # a broken model must not end the session
            logger.exception("transcription failed")
            yield ErrorFrame(f"Speech recognition failed: {error}")
