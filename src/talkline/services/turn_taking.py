"""The end of the user's turn, decided from what was heard and what was said.

Smart Turn hears only audio: it often calls a complete sentence unfinished (the turn then
ends only after ``smart_turn_stop_secs`` of silence, 3 s) and a clause that looks finished
("Could you tell me …") complete. The transcript is ready a fraction of a second after the
pause, so the words say how long to wait (``end_of_turn``), and Smart Turn's probability
only picks among the waits for a complete sentence:

- a complete sentence (ending in ``.``, ``!`` or ``?``, not on a filler or on a word that
  needs a continuation such as "and", "the", "for") ends the turn after
  ``complete_pause_secs`` of silence when Smart Turn also calls it complete (probability
  above ``SMART_TURN_COMPLETE``, Pipecat's own boundary), after ``disputed_pause_secs`` when
  Smart Turn calls it unfinished, and after ``unsure_pause_secs`` when Smart Turn is nearly
  certain it is unfinished (probability below ``min_probability``). ``complete_pause_secs``
  (0.4 s) sits above the pause people make at a comma ("Turn the volume down, … please"):
  0.24-0.32 s from the end of speech until the VAD hears speech again, on the benchmark's
  voices and its recordings of people (0.44-0.50 s until it confirms it: the waits were
  0.5 s when they ran to the confirmation, see the onset hold below), while the pauses
  people make in mid-sentence after words that look complete last 0.54 s or more.
  ``disputed_pause_secs`` is the same by default: on those synthetic voices Smart Turn
  disputes about a third of the complete sentences, and the mid-sentence pauses it disputes
  in the tuning set last 1 s or more, so a longer wait there saved none of them while it
  slowed the median answer by a quarter of a second. A deployment whose users' voices Smart
  Turn reads well can raise it;
- an unfinished clause ("a table for", "and", "um", a trailing comma) keeps listening until
  ``unfinished_pause_secs`` of silence, whatever Smart Turn says: longer than the pauses
  people make in mid-sentence (up to about 1.4 s heard), so the cost falls only on the
  user who truly stops on "for";
- words that give no sign either way (no final punctuation) end the turn after
  ``unsure_pause_secs`` (0.6 s), whatever Smart Turn says: it alone calls comma pauses
  complete.

Numbers are words too: "at 7.30." ends on "30", not on "at".

With ``speculate`` on, the answer is started as soon as the words say the sentence is complete
and the wait begins (Pipecat's speculative inference: ``trigger_user_turn_inference_triggered``
with a ``UserTurnSpeculation`` of the turn's words so far); the turn's end confirms it
(``confirms_speculation``: the context is written, no second inference), and the user speaking
again, a changed transcript or a turn ended some other way withdraws it. The answer's audio
is held until then (services/speculation.py), so the user hears it at the end of the wait or
when it is ready, whichever is later, instead of after both.

A turn does not end while the VAD hears what may be the user speaking again (``hear_onsets``):
the VAD confirms speech only after ``start_secs`` (0.2 s) of it, so without this a user who
went on 0.1 s before the wait ran out would be cut off, and the waits would have to cover
each pause plus that confirmation. At the deadline the strategy looks at the VAD's state;
while it is ``STARTING`` (or ``SPEAKING``, not yet reported) the end is put off a chunk at a
time, at most ``start_secs`` and a little more: speech confirmed continues the turn, a noise
that fades ends it then. The waits are therefore silences heard, not silences confirmed.

Each pause starts with a neutral probability (``min_probability``: "disputed") until Smart
Turn scores it, so a pause Smart Turn did not score never reuses an earlier pause's score.
Until the words are in, Smart Turn's own rule stands (its verdict, or its stop_secs). Whatever
the verdicts, no turn ends before ``min_pause_secs`` of silence (the floor, 0 by default: the
waits above do its work). ``end_of_turn`` and ``TurnWaits.earliest_end`` are shared with the
turn-taking benchmark's replay (bench/turns.py), so the benchmark measures this rule.
"""

from __future__ import annotations

import asyncio
import enum
import re
import time
from dataclasses import dataclass
from typing import Protocol

from loguru import logger
from pipecat.audio.vad.vad_analyzer import VADParams, VADState
from pipecat.frames.frames import (
    Frame,
    InterimTranscriptionFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import MetricsData, TurnMetricsData
from pipecat.turns.types import ProcessFrameResult, UserTurnSpeculation
from pipecat.turns.user_stop import TurnAnalyzerUserTurnStopStrategy
from pipecat.utils.string import TextPartForConcatenation, concatenate_aggregated_text

# --- Pipecat internals this module relies on -----------------------------------------------
# (owner, name, kind, why), checked by tests/test_pipecat_contract.py.
_OWNER = TurnAnalyzerUserTurnStopStrategy
PIPECAT_PRIVATE: tuple[tuple[type, str, str, str], ...] = (
    (_OWNER, "_maybe_trigger_user_turn_stopped", "override", "add the transcript's verdict"),
    (_OWNER, "_handle_prediction_result", "override", "keep Smart Turn's probability"),
    (_OWNER, "_text", "reads", "the turn's transcript"),
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
_WORD = re.compile(r"[a-z0-9']+")


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


SMART_TURN_COMPLETE = 0.5  # Smart Turn v3 calls a turn complete above this probability


def smart_turn_complete(probability: float) -> bool:
    """Smart Turn's verdict from its probability, as Pipecat draws it (``> 0.5``)."""
    return probability > SMART_TURN_COMPLETE


@dataclass(frozen=True)
class TurnWaits:
    """How long the transcript-aware strategy waits (seconds of silence after speech)."""

    complete_pause_secs: float = 0.4
    disputed_pause_secs: float = 0.4
    unsure_pause_secs: float = 0.6
    unfinished_pause_secs: float = 2.5
    min_probability: float = 0.05
    min_pause_secs: float = 0.0

    def earliest_end(self, speech_end: float) -> float:
        """The floor: no turn ends before ``min_pause_secs`` of silence after the speech."""
        return speech_end + self.min_pause_secs


def end_of_turn(
    speech_end: float, verdict: Verdict | None, probability: float, waits: TurnWaits
) -> float | None:
    """When the turn ends if the user stays quiet after ``speech_end``, given the words'
    verdict and Smart Turn's probability that the turn is complete; None while the words are
    not in (Smart Turn's own rule decides then, above the floor)."""
    if verdict is None:
        return None
    return max(speech_end + pause_for(verdict, probability, waits), waits.earliest_end(speech_end))


def pause_for(verdict: Verdict, probability: float, waits: TurnWaits) -> float:
    """The silence after speech that ends a turn with these words (see the module's doc)."""
    if verdict is Verdict.UNFINISHED:
        return waits.unfinished_pause_secs
    if verdict is Verdict.COMPLETE and smart_turn_complete(probability):
        return waits.complete_pause_secs
    if verdict is Verdict.COMPLETE and probability >= waits.min_probability:
        return waits.disputed_pause_secs
    return waits.unsure_pause_secs


ONSET_RECHECK_SECS = 0.02  # while an onset holds the end: look again after a client chunk
ONSET_SLACK_SECS = 0.1  # ... for at most the VAD's start_secs and this past the deadline


class HearsOnsets(Protocol):
    """The session's VAD, as the strategy reads it: its state after the newest audio."""

    state: VADState

    @property
    def params(self) -> VADParams: ...


def onset_holds(state: VADState, now: float, since: float, start_secs: float) -> bool:
    """Whether a turn's end, held first at ``since``, is held at ``now``: the VAD hears what
    may be the user speaking again (``STARTING``, or ``SPEAKING`` not yet reported), and
    holding has not yet lasted as long as confirming speech takes (``start_secs``) and a
    little more."""
    if state not in (VADState.STARTING, VADState.SPEAKING):
        return False
    return now < since + start_secs + ONSET_SLACK_SECS


class TranscriptTurnStopStrategy(TurnAnalyzerUserTurnStopStrategy):
    """Smart Turn's stop strategy, overruled by the transcript where it is clear."""

    def __init__(self, *, waits: TurnWaits, speculate: bool = False, **kwargs):
        super().__init__(**kwargs)
        self._waits = waits
        self._speculate = speculate
        self._speculation: UserTurnSpeculation | None = None  # the answer started early
        self._turn_open = False  # an answer is started early only inside a user turn
        self._heard: list[TextPartForConcatenation] = []  # the turn's words, as the user
        # aggregator joins them into the context's message
        self._speech_ended_at: float | None = None  # wall clock, when VAD last heard speech
        # Smart Turn's "complete" probability for this pause; neutral ("disputed") until it
        # scores the pause, which Pipecat asks for on the VAD's stop.
        self._probability = waits.min_probability
        self._recheck: asyncio.Task | None = None
        self._recheck_at = 0.0  # the wall-clock deadline the pending recheck looks again at
        self._vad: HearsOnsets | None = None  # hear_onsets
        self._held_since: float | None = None  # when the onset hold first held this pause

    def hear_onsets(self, vad: HearsOnsets) -> None:
        """Hold the turn's end while ``vad`` hears what may be the user speaking again (see
        the module's doc). ``vad`` must be the session's own VAD, hearing its audio."""
        self._vad = vad

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, (VADUserStoppedSpeakingFrame, VADUserStartedSpeakingFrame)):
            self._held_since = None  # a new pause, or none
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            self._speech_ended_at = frame.timestamp - frame.stop_secs
            self._probability = self._waits.min_probability  # before super asks Smart Turn
        elif isinstance(frame, (TranscriptionFrame, InterimTranscriptionFrame)):
            await self._hear(frame)  # before super, which may speculate on the new words
        result = await super().process_frame(frame)
        if isinstance(frame, VADUserStartedSpeakingFrame):
            # The user is speaking again: the pause's deadline no longer holds, so drop the
            # timer that would look at it. Only after Pipecat has dropped its own verdict:
            # with no pause on record its rule decides, and its pending timeout could end
            # the turn on the stale verdict while this awaits.
            self._speech_ended_at = None
            await self._cancel_recheck()
            await self._withdraw()
        return result

    async def handle_user_turn_started(self) -> None:
        await self._end_of_turn_state()
        self._turn_open = True
        await super().handle_user_turn_started()

    async def handle_user_turn_stopped(self) -> None:
        self._turn_open = False
        await self._end_of_turn_state()
        await super().handle_user_turn_stopped()

    async def cleanup(self) -> None:
        await self._cancel_recheck()
        await super().cleanup()

    async def trigger_user_turn_stopped(self, *, enable_user_speaking_frames: bool | None = None):
        """End the turn: the answer started early stands if its words are still the turn's
        (only the context write is owed then), else a fresh inference answers."""
        speculation, self._speculation = self._speculation, None
        if speculation is not None and speculation.text == self._turn_text():
            logger.debug(f"{self}: the turn ended as the early answer assumed, releasing it")
            await self.trigger_user_turn_finalized(
                enable_user_speaking_frames=enable_user_speaking_frames,
                confirms_speculation=True,
            )
            return
        if speculation is not None:
            logger.debug(f"{self}: withdrawing the early answer to [{speculation.text}]")
            await self.trigger_user_turn_speculation_cancelled()
        await super().trigger_user_turn_stopped(
            enable_user_speaking_frames=enable_user_speaking_frames
        )

    async def _handle_prediction_result(self, result: MetricsData | None) -> None:
        if isinstance(result, TurnMetricsData):
            self._probability = result.probability
        await super()._handle_prediction_result(result)

    async def _maybe_trigger_user_turn_stopped(self) -> None:
        if self._speech_ended_at is None:
            await super()._maybe_trigger_user_turn_stopped()  # no VAD stop: Pipecat's fallback
            return
        if not await self._waited_until(self._waits.earliest_end(self._speech_ended_at)):
            await self._maybe_speculate()
            return  # below the floor, whatever Smart Turn and the words say
        end = end_of_turn(self._speech_ended_at, self._verdict(), self._probability, self._waits)
        if end is None:
            await super()._maybe_trigger_user_turn_stopped()  # no words yet: Smart Turn's rule
        elif await self._waited_until(end):
            if self._onset_holds():
                logger.debug(f"{self}: the VAD hears speech starting, the turn's end waits")
                await self._waited_until(time.time() + ONSET_RECHECK_SECS)
                return
            await self.trigger_user_turn_stopped()
        else:
            await self._maybe_speculate()

    def _onset_holds(self) -> bool:
        """Whether the turn's end, due now, waits for what the VAD hears starting; the hold
        is timed from its first look (the words may come well after the wait ran out)."""
        if self._vad is None:
            return False
        now = time.time()
        since = self._held_since = self._held_since or now
        return onset_holds(self._vad.state, now, since, self._vad.params.start_secs)

    def _verdict(self) -> Verdict | None:
        """The transcript's verdict once it covers everything said and the user is quiet."""
        if self._vad_user_speaking or self._speech_ended_at is None:
            return None
        if not (self._text and self._transcript_finalized):
            return None
        return judge(self._text)

    def _turn_text(self) -> str:
        """The turn's words so far, as the context's user message will read."""
        return concatenate_aggregated_text(self._heard)

    async def _hear(self, frame: TranscriptionFrame | InterimTranscriptionFrame) -> None:
        """New words: an answer started on the old ones no longer answers the turn."""
        if isinstance(frame, TranscriptionFrame) and frame.text.strip():
            self._heard.append(
                TextPartForConcatenation(frame.text, frame.includes_inter_frame_spaces)
            )
        if self._speculation is not None and (
            isinstance(frame, InterimTranscriptionFrame)
            or self._speculation.text != self._turn_text()
        ):
            await self._withdraw()

    async def _maybe_speculate(self) -> None:
        """Start the answer while the wait for a complete sentence runs (``speculate``)."""
        # A transcript that comes after its turn ended opens no answer: Pipecat would drop
        # the inference (no turn) but pass on its withdrawal, which the hold would then
        # count against the next turn's early answer, and that turn would go unanswered.
        if not self._speculate or self._speculation is not None or not self._turn_open:
            return
        if self._verdict() is not Verdict.COMPLETE:
            return
        self._speculation = UserTurnSpeculation(text=self._turn_text())
        logger.debug(f"{self}: answering early, during the wait: [{self._speculation.text}]")
        await self.trigger_user_turn_inference_triggered(speculation=self._speculation)

    async def _withdraw(self) -> None:
        """Withdraw the answer started early, if one is in flight."""
        if self._speculation is not None:
            logger.debug(f"{self}: withdrawing the early answer to [{self._speculation.text}]")
            self._speculation = None
            await self.trigger_user_turn_speculation_cancelled()

    async def _end_of_turn_state(self) -> None:
        """At a turn boundary: no recheck, no speculation left over, no words."""
        await self._cancel_recheck()
        await self._withdraw()
        self._heard.clear()

    async def _waited_until(self, deadline: float) -> bool:
        """Whether the wall clock has passed ``deadline``; if not, look again when it has.
        One recheck is pending at a time, at the earliest deadline asked for: a later
        transcript may shorten the wait (unsure → complete), and a later deadline is looked
        at again when the earlier one's recheck finds it not yet passed."""
        remaining = deadline - time.time()
        if remaining <= 0:
            return True
        if self._recheck is None or deadline < self._recheck_at:
            await self._cancel_recheck()
            self._recheck_at = deadline
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
