"""What one session is doing, seen from its pipeline: turns, latency, tokens, errors.

One observer per session, cheap on the hot path: it looks at a frame only the first time it
is pushed, and only at a handful of frame types.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    ErrorFrame,
    MetricsFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import LLMUsageMetricsData
from pipecat.observers.base_observer import BaseObserver, FramePushed

WATCHED = (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
    ErrorFrame,
    MetricsFrame,
)
ANSWER_WAIT_SECS = 10.0  # after the user stops, how long an answer counts as coming


class SessionObserver(BaseObserver):
    """Tracks turn state (for draining) and per-session numbers (for metrics and logs)."""

    def __init__(self, vad_stop_secs: float):
        super().__init__()
        self._vad_stop_secs = vad_stop_secs
        self.user_speaking = False
        self.bot_speaking = False
        self._speech_ended_at: float | None = None
        self.turns = 0
        self.latencies: list[float] = []
        self.tokens = 0
        self.errors: Counter[str] = Counter()
        self.on_turn: Callable[[float | None], None] = lambda _latency: None

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        if not data.first_push or not isinstance(frame, WATCHED):
            return
        now = time.monotonic()
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            # The VAD reports the stop ``stop_secs`` after the speech really ended.
            self._speech_ended_at = now - self._vad_stop_secs
        elif isinstance(frame, UserStartedSpeakingFrame):
            self.user_speaking = True
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self.user_speaking = False
        elif isinstance(frame, BotStartedSpeakingFrame):
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
