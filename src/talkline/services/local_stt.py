"""Whisper speech-to-text with one model per process, shared by all sessions.

Pipecat's ``WhisperSTTService`` loads a model per instance (about 100 MB each for
``tiny.en``). Here the CTranslate2 model is loaded once; a semaphore bounds how many
transcriptions run at once so a burst of sessions queues instead of oversubscribing the
CPU.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
from faster_whisper import WhisperModel
from loguru import logger
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.transcriptions.language import Language

from talkline.services.shared_stt import SharedModelSTT

TTFS_P99_SECS = 1.0  # speech end → transcript, tiny.en on two cores (measured ~0.6-0.9 s)
NO_SPEECH_THRESHOLD = 0.4  # Pipecat's default: segments likelier than this to be noise are dropped

# --- Pipecat internals this module relies on -----------------------------------------------
# Private names of Pipecat's Whisper service that SharedWhisperSTTService overrides, calls or
# reads, with why; tests/test_pipecat_contract.py checks each against the installed Pipecat.
# (owner, name, kind, why); kind is "override", "calls" or "reads" (reads or writes).
PIPECAT_PRIVATE: tuple[tuple[type, str, str, str], ...] = (
    (WhisperSTTService, "_load", "override", "borrow the shared model instead of loading one"),
    (WhisperSTTService, "_model", "reads", "set to the shared model"),
)


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

    def transcribe(self, pcm: bytes) -> str:
        """Speech in 16 kHz 16-bit mono PCM to text; blocking, run it in a thread.

        Greedy decoding: on short utterances it reads the same as beam search and leaves
        more CPU to other sessions (the encoder's fixed 30 s window dominates the time).
        """
        audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        segments, _ = self.model.transcribe(
            audio,
            language="en",
            beam_size=1,
            without_timestamps=True,
            condition_on_previous_text=False,
        )
        spoken = [s.text for s in segments if s.no_speech_prob < NO_SPEECH_THRESHOLD]
        return " ".join(text.strip() for text in spoken).strip()


class SharedWhisperSTTService(SharedModelSTT, WhisperSTTService):
    """Pipecat's Whisper service, borrowing the shared model instead of loading one."""

    _shared: SharedWhisper

    def __init__(self, shared: SharedWhisper, **kwargs):
        self._shared = shared
        super().__init__(
            settings=WhisperSTTService.Settings(model=shared.model_path, language=Language.EN),
            device="cpu",
            ttfs_p99_latency=TTFS_P99_SECS,
            **kwargs,
        )

    def _load(self) -> None:
        self._model = self._shared.model

    def transcribe(self, audio: bytes) -> str:
        return self._shared.transcribe(audio)
