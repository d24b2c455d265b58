"""The end of the user's turn, decided from what was heard and what was said.

Smart Turn hears only audio and often calls a complete sentence unfinished; the turn then
ends only after ``smart_turn_stop_secs`` of silence (3 s). The transcript is ready a fraction
of a second after the pause, so it can settle those cases:

- a complete sentence (ending in ``.``, ``!`` or ``?``, not on a filler or on a word that
  needs a continuation such as "and", "the", "for") and a pause of ``complete_pause_secs``
  end the turn, unless Smart Turn is nearly certain it is unfinished (probability below
  ``min_probability``);
- an unfinished clause ("a table for", "and", "um", a trailing comma) keeps listening until
  ``unfinished_pause_secs`` of silence, even when Smart Turn calls it complete;
- words that give no sign either way (no final punctuation), or a sentence Smart Turn is
  nearly certain is unfinished, end the turn after ``unsure_pause_secs``;
- an unfinished clause that Smart Turn also calls unfinished waits for Smart Turn's
  ``stop_secs``, as before.

Whatever the verdicts, no turn ends before ``min_pause_secs`` of silence (the floor): a
fast recognizer makes every rule above act within a few hundred ms of a pause, so a user who
pauses mid-sentence on a clause that looks complete ("I'd like a table … by the window") would
be cut off more often than with a slow one. ``TurnWaits.earliest_end`` is that rule, shared
with the turn-taking benchmark's replay (bench/turns.py).
"""

from __future__ import annotations

import asyncio
import enum
import re
import time
from dataclasses import dataclass

from pipecat.frames.frames import (
    Frame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import MetricsData, TurnMetricsData
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_stop import TurnAnalyzerUserTurnStopStrategy

# --- Pipecat internals this module relies on -----------------------------------------------
# (owner, name, kind, why), checked by tests/test_pipecat_contract.py.
_OWNER = TurnAnalyzerUserTurnStopStrategy
PIPECAT_PRIVATE: tuple[tuple[type, str, str, str], ...] = (
    (_OWNER, "_maybe_trigger_user_turn_stopped", "override", "add the transcript's verdict"),
    (_OWNER, "_handle_prediction_result", "override", "keep Smart Turn's probability"),
    (_OWNER, "_text", "reads", "the turn's transcript"),
    (_OWNER, "_turn_complete", "reads", "Smart Turn's verdict"),
    (_OWNER, "_transcript_finalized", "reads", "the transcript covers the speech so far"),
    (_OWNER, "_vad_user_speaking", "reads", "no early end while the user speaks"),
)

FILLERS = frozenset(["um", "uh", "er", "erm", "uhm", "hmm", "mm", "ah", "eh"])
# Words an English sentence rarely ends on (a question may: "Where are you from?"):
# conjunctions, articles, possessives, subject pronouns, prepositions, linking and modal
# verbs. Words that often end one ("it", "that", "me", "can", "will", "up", "please") are
# left out on purpose.
CONTINUATIONS = frozenset(
    [
        *["and", "or", "but", "because", "although", "though", "whereas", "if", "than"],
        *["a", "an", "the", "my", "your", "our", "their", "every", "each"],
        *["i", "we", "they", "he", "she", "i'm", "i'd", "i'll", "i've", "we're", "they're"],
        *["let's", "of", "to", "for", "with", "from", "at", "by", "into", "onto", "about"],
        *["is", "are", "was", "were", "whether", "could", "would", "should", "might", "must"],
        *["want", "need", "maybe", "just", "really", "very"],
    ]
)
_WORD = re.compile(r"[a-z']+")


class Verdict(enum.Enum):
    """What a transcript says about the end of the turn."""

    COMPLETE = "complete"  # a finished sentence
    UNFINISHED = "unfinished"  # a clause or a filler that wants more
    UNSURE = "unsure"  # no sign either way


def judge(text: str) -> Verdict:
    """The transcript's verdict, from its last word and its final punctuation."""
    text = text.strip()
    words = _WORD.findall(text.lower().replace("\u2019", "'"))
    if not words:
        return Verdict.UNSURE
    question = text.endswith("?")
    if words[-1] in FILLERS or (words[-1] in CONTINUATIONS and not question):
        return Verdict.UNFINISHED
    if text.endswith((",", ";", ":", "-", "...", "\u2026")):
        return Verdict.UNFINISHED
    if text.endswith((".", "!", "?")):
        return Verdict.COMPLETE
    return Verdict.UNSURE


@dataclass(frozen=True)
class TurnWaits:
    """How long the transcript-aware strategy waits (seconds of silence after speech)."""

    complete_pause_secs: float = 0.3
    unsure_pause_secs: float = 1.5
    unfinished_pause_secs: float = 1.5
    min_probability: float = 0.05
    min_pause_secs: float = 1.2  # chosen by the turn benchmark (bench/results/turns/NOTES.md)

    def earliest_end(self, speech_end: float) -> float:
        """The floor: no turn ends before ``min_pause_secs`` of silence after the speech."""
        return speech_end + self.min_pause_secs


class TranscriptTurnStopStrategy(TurnAnalyzerUserTurnStopStrategy):
    """Smart Turn's stop strategy, overruled by the transcript where it is clear."""

    def __init__(self, *, waits: TurnWaits, **kwargs):
        super().__init__(**kwargs)
        self._waits = waits
        self._speech_ended_at: float | None = None  # wall clock, when VAD last heard speech
        self._probability = 1.0  # Smart Turn's last "complete" probability
        self._recheck: asyncio.Task | None = None

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            self._speech_ended_at = frame.timestamp - frame.stop_secs
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            self._speech_ended_at = None
            await self._cancel_recheck()
        return await super().process_frame(frame)

    async def handle_user_turn_started(self) -> None:
        self._probability = 1.0
        await self._cancel_recheck()
        await super().handle_user_turn_started()

    async def handle_user_turn_stopped(self) -> None:
        await self._cancel_recheck()
        await super().handle_user_turn_stopped()

    async def cleanup(self) -> None:
        await self._cancel_recheck()
        await super().cleanup()

    async def _handle_prediction_result(self, result: MetricsData | None) -> None:
        if isinstance(result, TurnMetricsData):
            self._probability = result.probability
        await super()._handle_prediction_result(result)

    async def _maybe_trigger_user_turn_stopped(self) -> None:
        if self._speech_ended_at is not None and not self._waited_until(
            self._waits.earliest_end(self._speech_ended_at)
        ):
            return  # below the floor, whatever Smart Turn and the words say
        verdict = self._verdict()
        if verdict is Verdict.UNFINISHED:
            if self._turn_complete and not self._waited(self._waits.unfinished_pause_secs):
                return  # Smart Turn says done, the words say more is coming: hold on
        elif verdict is not None and not self._turn_complete:
            if self._waited(self._pause_for(verdict)):
                await self.trigger_user_turn_stopped()
            return
        await super()._maybe_trigger_user_turn_stopped()

    def _verdict(self) -> Verdict | None:
        """The transcript's verdict once it covers everything said and the user is quiet."""
        if self._vad_user_speaking or self._speech_ended_at is None:
            return None
        if not (self._text and self._transcript_finalized):
            return None
        return judge(self._text)

    def _pause_for(self, verdict: Verdict) -> float:
        """The silence that ends a turn Smart Turn calls unfinished, given its words."""
        if verdict is Verdict.COMPLETE and self._probability >= self._waits.min_probability:
            return self._waits.complete_pause_secs
        return self._waits.unsure_pause_secs

    def _waited(self, pause: float) -> bool:
        """Whether the silence has lasted ``pause``; if not, look again when it has."""
        assert self._speech_ended_at is not None
        return self._waited_until(self._speech_ended_at + pause)

    def _waited_until(self, deadline: float) -> bool:
        """Whether the wall clock has passed ``deadline``; if not, look again when it has."""
        remaining = deadline - time.time()
        if remaining <= 0:
            return True
        if self._recheck is None:
            self._recheck = self.task_manager.create_task(
                self._look_again(remaining), f"{self}::look_again"
            )
        return False

    async def _look_again(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._recheck = None
        await self._maybe_trigger_user_turn_stopped()

    async def _cancel_recheck(self) -> None:
        if self._recheck is not None:
            task, self._recheck = self._recheck, None
            await self.task_manager.cancel_task(task)
