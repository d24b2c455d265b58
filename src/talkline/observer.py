"""What one session is doing, seen from its pipeline: turns, latency, tokens, errors.

One observer per session, cheap on the hot path: it looks at a frame only the first time it
is pushed, and only at a handful of frame types. ``LeanWorkerObserver`` keeps the frames no
observer reads (audio, most of all) away from every observer's queue.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from pipecat.frames.frames import (
    AudioRawFrame,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    ErrorFrame,
    MetricsFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import LLMUsageMetricsData
from pipecat.observers.base_observer import BaseObserver, FrameProcessed, FramePushed
from pipecat.pipeline.worker import IdleFrameObserver, PipelineWorker
from pipecat.pipeline.worker_observer import WorkerObserver
from pipecat.processors.frame_processor import FrameDirection
from pipecat.processors.frameworks.rtvi import RTVIObserver

# --- Pipecat internals this module relies on -----------------------------------------------
# tests/test_pipecat_contract.py checks each entry against the installed Pipecat. Using
# another private name means adding it here. (owner, name, kind, why)
PIPECAT_PRIVATE: tuple[tuple[type, str, str, str], ...] = (
    (PipelineWorker, "_observer", "reads", "replaced by LeanWorkerObserver after __init__"),
    (WorkerObserver, "_observers", "reads", "the observers the worker was given"),
    (RTVIObserver, "_params", "reads", "whether RTVI reports audio levels (reads audio)"),
    (IdleFrameObserver, "_idle_timeout_frames", "reads", "whether idle detection reads audio"),
)

WATCHED = (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
    ErrorFrame,
    MetricsFrame,
)
SPEECH = (
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
)
ANSWER_WAIT_SECS = 10.0  # after the user stops, how long an answer counts as coming


class SessionObserver(BaseObserver):
    """Tracks turn state (for draining) and per-session numbers (for metrics and logs)."""

    def __init__(self, vad_stop_secs: float):
        super().__init__(observe_every_push=False)
        self._vad_stop_secs = vad_stop_secs
        self.user_speaking = False
        self.bot_speaking = False
        self._speech_ended_at: float | None = None
        self.turns = 0
        self.latencies: list[float] = []
        self.tokens = 0
        self.errors: Counter[str] = Counter()
        self.on_turn: Callable[[float | None], None] = lambda _latency: None
        self.last_active = time.time()  # wall clock of the last speech start or stop, either side

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        if not data.first_push or not isinstance(frame, WATCHED):
            return
        now = time.monotonic()
        if isinstance(frame, SPEECH):
            self.last_active = time.time()
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            # The VAD reports the stop ``stop_secs`` after the speech really ended.
            self._speech_ended_at = now - self._vad_stop_secs
        elif isinstance(frame, UserStartedSpeakingFrame):
            self.user_speaking = True
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self.user_speaking = False
        elif isinstance(frame, BotStartedSpeakingFrame):
            # The output transport sends one each way; the downstream one is the turn.
            if data.direction is FrameDirection.DOWNSTREAM:
                self._bot_started(now)
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self.bot_speaking = False
        elif isinstance(frame, ErrorFrame):
            self.errors["fatal" if frame.fatal else "error"] += 1
        elif isinstance(frame, MetricsFrame):
            self._count_tokens(frame)

    def _bot_started(self, now: float) -> None:
        self.bot_speaking = True
        self.turns += 1
        latency = None
        if self._speech_ended_at is not None:
            latency = now - self._speech_ended_at
            self.latencies.append(latency)
            self._speech_ended_at = None
        self.on_turn(latency)

    def _count_tokens(self, frame: MetricsFrame) -> None:
        for item in frame.data:
            if isinstance(item, LLMUsageMetricsData):
                self.tokens += item.value.total_tokens or 0

    def busy(self) -> bool:
        """Whether a turn is under way: someone speaking, or an answer still coming."""
        ended = self._speech_ended_at
        awaiting = ended is not None and time.monotonic() - ended < ANSWER_WAIT_SECS
        return self.user_speaking or self.bot_speaking or awaiting

    def latency_summary(self) -> str:
        if not self.latencies:
            return "latency n/a"
        ms = sorted(latency * 1000 for latency in self.latencies)
        p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
        return f"latency p50 {statistics.median(ms):.0f} ms p95 {p95:.0f} ms"


def reads_audio(observer: BaseObserver) -> bool:
    """Whether ``observer`` may act on audio frames (unknown observers: assume so)."""
    if isinstance(observer, SessionObserver) or getattr(observer, "ignores_audio", False):
        return False
    if isinstance(observer, RTVIObserver):
        params = observer._params
        return params.user_audio_level_enabled or params.bot_audio_level_enabled
    if isinstance(observer, IdleFrameObserver):
        return any(issubclass(kind, AudioRawFrame) for kind in observer._idle_timeout_frames)
    return True


def reads_processing(observer: BaseObserver) -> bool:
    """Whether ``observer`` handles ``on_process_frame`` (the base class ignores it)."""
    return type(observer).on_process_frame is not BaseObserver.on_process_frame


class LeanWorkerObserver(WorkerObserver):
    """Pipecat's observer fan-out without the events no observer of the session reads.

    Pipecat reports every push, and every processing, of every frame to each observer
    through a queue and a task per observer: with three observers, one 32 ms audio chunk
    crossing the pipeline cost about thirty queue hops. Audio frames are most frames and
    none of talkline's observers reads them (RTVI's only reports audio levels, which are
    off); none handles ``on_process_frame``. Those events stop here, before any queue;
    everything else reaches every observer as before.
    """

    def __init__(self, *, observers: list[BaseObserver] | None = None, **kwargs: Any):
        super().__init__(observers=observers, **kwargs)
        self._audio_read = False
        self._processing_read = False
        self._survey()

    def _survey(self) -> None:
        self._audio_read = any(reads_audio(o) for o in self._observers)
        self._processing_read = any(reads_processing(o) for o in self._observers)

    def add_observer(self, observer: BaseObserver) -> None:
        super().add_observer(observer)
        self._survey()

    async def on_process_frame(self, data: FrameProcessed) -> None:
        if self._processing_read:
            await super().on_process_frame(data)

    async def on_push_frame(self, data: FramePushed) -> None:
        if self._audio_read or not isinstance(data.frame, AudioRawFrame):
            await super().on_push_frame(data)


class LeanPipelineWorker(PipelineWorker):
    """Pipecat's pipeline worker, observed through ``LeanWorkerObserver``."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._observer = LeanWorkerObserver(observers=self._observer._observers)
