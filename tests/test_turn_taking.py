"""The transcript-aware end of turn: its verdict on words, and the strategy's timing.

The strategy is driven with Pipecat's own frames; a stand-in turn analyzer plays Smart Turn
(its verdict is what these tests vary), so each case takes well under a second.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest
from pipecat.audio.turn.base_turn_analyzer import BaseTurnAnalyzer, BaseTurnParams, EndOfTurnState
from pipecat.audio.vad.vad_analyzer import VADParams, VADState
from pipecat.frames.frames import (
    InterimTranscriptionFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import MetricsData, TurnMetricsData
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.turns.types import UserTurnSpeculation
from pipecat.turns.user_stop.base_user_turn_stop_strategy import UserTurnStoppedParams
from pipecat.utils.asyncio.task_manager import TaskManager
from pipecat.utils.time import time_now_iso8601

from talkline.config import Settings
from talkline.pipelines.build import speculates
from talkline.services.turn_taking import (
    ONSET_SLACK_SECS,
    TranscriptTurnStopStrategy,
    TurnWaits,
    Verdict,
    end_of_turn,
    judge,
    onset_holds,
    smart_turn_complete,
)

VAD_STOP = 0.2
# Distinct waits, so that each test can tell which one ended the turn.
WAITS = TurnWaits(
    complete_pause_secs=0.3,
    disputed_pause_secs=0.6,
    unsure_pause_secs=0.9,
    unfinished_pause_secs=1.2,
    min_probability=0.05,
    min_pause_secs=0.0,
)


@pytest.mark.parametrize(
    "text",
    [
        "What is the weather like in Paris today?",
        "No, not heartily, just less heartily.",
        "Thanks!",
        "Where are you from?",
        "I like it.",
        "The train leaves at 7.30.",
        "Call me at 5.",
    ],
)
def test_finished_sentences_are_complete(text: str) -> None:
    assert judge(text) is Verdict.COMPLETE


@pytest.mark.parametrize(
    "text",
    [
        "I'd like to book a table for.",
        "I'd like to book a table for",
        "So I went there and",
        "Um.",
        "Well, uh...",
        "I was thinking,",
        "Can you tell me about the",
        "It is my",
    ],
)
def test_clauses_and_fillers_are_unfinished(text: str) -> None:
    assert judge(text) is Verdict.UNFINISHED


@pytest.mark.parametrize("text", ["", "  ", "I'd like to book a table", "okay"])
def test_no_sign_is_unsure(text: str) -> None:
    assert judge(text) is Verdict.UNSURE


def processor_setup() -> FrameProcessorSetup:
    """What a pipeline gives a strategy, less the clock and worker it does not use."""
    return FrameProcessorSetup(
        clock=None,  # type: ignore[arg-type]
        task_manager=TaskManager(),
        pipeline_worker=None,  # type: ignore[arg-type]
    )


class StandInSmartTurn(BaseTurnAnalyzer):
    """Says "complete" or not, with a probability, when the VAD reports a pause: the given
    probabilities in turn, the last one from then on; None gives no score at all."""

    def __init__(self, complete: bool, *probabilities: float | None):
        super().__init__()
        self.complete, self.probabilities = complete, list(probabilities)

    @property
    def speech_triggered(self) -> bool:
        return False

    @property
    def params(self) -> BaseTurnParams:
        return BaseTurnParams()

    def append_audio(self, buffer: bytes, is_speech: bool) -> EndOfTurnState:
        return EndOfTurnState.INCOMPLETE

    async def analyze_end_of_turn(self) -> tuple[EndOfTurnState, MetricsData | None]:
        state = EndOfTurnState.COMPLETE if self.complete else EndOfTurnState.INCOMPLETE
        many = len(self.probabilities) > 1
        probability = self.probabilities.pop(0) if many else self.probabilities[0]
        if probability is None:
            return state, None
        data = TurnMetricsData(
            processor="smart-turn",
            is_complete=self.complete,
            probability=probability,
            e2e_processing_time_ms=1.0,
        )
        return state, data

    def clear(self) -> None:
        """Nothing buffered."""


async def turn_end_after(
    text: str | list[str],
    *,
    complete: bool,
    probability: float = 0.3,
    wait: float = 2.5,
    min_pause: float = 0.0,
) -> float | None:
    """Seconds from the end of speech to the strategy's end of turn (None: not within
    ``wait``), when the user says ``text`` and then stays quiet (a list: the recognizer
    revises the transcript, each in turn, during the pause)."""
    waits = replace(WAITS, min_pause_secs=min_pause)
    strategy = TranscriptTurnStopStrategy(
        turn_analyzer=StandInSmartTurn(complete, probability), waits=waits
    )
    ended: list[float] = []

    @strategy.event_handler("on_user_turn_stopped")
    async def stopped(_strategy: object, _params: object) -> None:
        ended.append(time.time())

    await strategy.setup(processor_setup())
    await strategy.handle_user_turn_started()
    await strategy.process_frame(VADUserStartedSpeakingFrame())
    speech_end = time.time()
    await strategy.process_frame(
        VADUserStoppedSpeakingFrame(stop_secs=VAD_STOP, timestamp=speech_end + VAD_STOP)
    )
    for words in [text] if isinstance(text, str) else text:
        await strategy.process_frame(finalized(words))
    deadline = time.time() + wait
    while not ended and time.time() < deadline:
        await asyncio.sleep(0.02)
    await strategy.cleanup()
    return ended[0] - speech_end if ended else None


def finalized(text: str) -> TranscriptionFrame:
    """The recognizer's final transcript of the speech so far."""
    transcript = TranscriptionFrame(text, "user", time_now_iso8601())
    transcript.finalized = True
    return transcript


def ended_within(after: float | None, pause: float) -> bool:
    """Whether the turn ended after ``pause`` of silence, and not much later."""
    return after is not None and pause - 0.02 <= after < pause + 0.25


def test_each_verdict_and_smart_turn_probability_has_its_wait() -> None:
    """The rule the strategy and the benchmark share: the words pick the wait, Smart Turn's
    probability only picks among a complete sentence's waits; no words, no say."""
    complete, unsure, unfinished = Verdict.COMPLETE, Verdict.UNSURE, Verdict.UNFINISHED
    assert end_of_turn(10.0, complete, 0.9, WAITS) == 10.0 + 0.3
    assert end_of_turn(10.0, complete, 0.3, WAITS) == 10.0 + 0.6
    assert end_of_turn(10.0, complete, 0.01, WAITS) == 10.0 + 0.9
    assert end_of_turn(10.0, unsure, 0.9, WAITS) == 10.0 + 0.9
    assert end_of_turn(10.0, unfinished, 0.9, WAITS) == 10.0 + 1.2
    assert end_of_turn(10.0, unfinished, 0.01, WAITS) == 10.0 + 1.2
    assert end_of_turn(10.0, None, 0.9, WAITS) is None
    floored = replace(WAITS, min_pause_secs=0.7)
    assert end_of_turn(10.0, complete, 0.9, floored) == 10.0 + 0.7


def test_smart_turn_calls_complete_above_one_half_as_pipecat_does() -> None:
    """Pipecat's Smart Turn says complete when its probability is above 0.5, not at 0.5:
    exactly 0.5 is a disputed sentence."""
    assert not smart_turn_complete(0.5) and smart_turn_complete(0.5001)
    assert end_of_turn(10.0, Verdict.COMPLETE, 0.5, WAITS) == 10.0 + 0.6
    assert end_of_turn(10.0, Verdict.COMPLETE, 0.5001, WAITS) == 10.0 + 0.3


async def test_a_sentence_smart_turn_agrees_is_complete_waits_the_short_pause() -> None:
    """Both say done: the turn ends after the short pause, not at the VAD's stop (a comma's
    pause would end it)."""
    after = await turn_end_after("No, not heartily.", complete=True, probability=0.9)
    assert ended_within(after, 0.3), after


async def test_a_complete_sentence_smart_turn_disputes_waits_a_little_longer() -> None:
    """Smart Turn unsure (0.3), a finished sentence: the turn ends after the disputed pause,
    not Smart Turn's 3 s."""
    after = await turn_end_after("No, not heartily, just less heartily.", complete=False)
    assert ended_within(after, 0.6), after


async def test_smart_turn_nearly_sure_of_more_waits_the_unsure_pause() -> None:
    """A finished-looking sentence that Smart Turn is nearly sure is unfinished."""
    after = await turn_end_after("I'd like to book a table.", complete=False, probability=0.01)
    assert ended_within(after, 0.9), after


@pytest.mark.parametrize("complete", [True, False])
async def test_an_unfinished_clause_waits_the_long_pause_whatever_smart_turn_says(
    complete: bool,
) -> None:
    """'a table for': held until the long pause, whether Smart Turn calls it complete or not
    (not its 3 s either)."""
    probability = 0.9 if complete else 0.3
    after = await turn_end_after(
        "I'd like to book a table for", complete=complete, probability=probability
    )
    assert ended_within(after, 1.2), after


async def test_a_filler_waits_although_smart_turn_says_done() -> None:
    after = await turn_end_after("Um.", complete=True, probability=0.9)
    assert ended_within(after, 1.2), after


@pytest.mark.parametrize("complete", [True, False])
async def test_unsure_words_wait_the_unsure_pause_whatever_smart_turn_says(
    complete: bool,
) -> None:
    """No sign in the words ("Thanks" cut at a comma): Smart Turn alone does not end it."""
    probability = 0.9 if complete else 0.3
    after = await turn_end_after("Thanks", complete=complete, probability=probability)
    assert ended_within(after, 0.9), after


@pytest.mark.parametrize("complete", [True, False])
async def test_no_turn_ends_below_the_floor(complete: bool) -> None:
    """A finished sentence, Smart Turn saying done (or unsure): with a 0.9 s floor the turn
    ends only after 0.9 s of silence, not at the VAD's stop or the 0.3 s pause."""
    probability = 0.9 if complete else 0.3
    after = await turn_end_after(
        "I'd like a table.", complete=complete, probability=probability, min_pause=0.9
    )
    assert ended_within(after, 0.9), after


async def test_a_floor_below_the_rules_waits_changes_nothing() -> None:
    """A floor shorter than the unsure pause leaves that pause in charge."""
    after = await turn_end_after("okay", complete=False, min_pause=0.6)
    assert ended_within(after, 0.9), after


async def test_a_revised_transcript_that_shortens_the_wait_ends_the_turn_sooner() -> None:
    """No full stop at first (the unsure pause pending), then the recognizer's revision ends
    the sentence: the turn ends after the short pause, as the benchmark's replay assumes,
    not at the deadline already pending."""
    after = await turn_end_after(
        ["I'd like a table", "I'd like a table."], complete=True, probability=0.9
    )
    assert ended_within(after, 0.3), after


async def listening(
    analyzer: StandInSmartTurn, waits: TurnWaits = WAITS
) -> tuple[TranscriptTurnStopStrategy, list[float]]:
    """A strategy set up at the start of a turn, and the times it ends the turn at."""
    strategy = TranscriptTurnStopStrategy(turn_analyzer=analyzer, waits=waits)
    ended: list[float] = []

    @strategy.event_handler("on_user_turn_stopped")
    async def stopped(_strategy: object, _params: object) -> None:
        ended.append(time.time())

    await strategy.setup(processor_setup())
    await strategy.handle_user_turn_started()
    return strategy, ended


async def pause_after(strategy: TranscriptTurnStopStrategy, text: str) -> float:
    """The user speaks, stops (the VAD says so ``VAD_STOP`` later) and is transcribed;
    returns when the speech ended."""
    await strategy.process_frame(VADUserStartedSpeakingFrame())
    speech_end = time.time()
    stop = VADUserStoppedSpeakingFrame(stop_secs=VAD_STOP, timestamp=speech_end + VAD_STOP)
    await strategy.process_frame(stop)
    await strategy.process_frame(finalized(text))
    return speech_end


def rechecks(strategy: TranscriptTurnStopStrategy) -> list[str]:
    """The strategy's pending "look again at the deadline" tasks."""
    names = [task.get_name() for task in strategy.task_manager.current_tasks()]
    return [name for name in names if name.endswith("::look_again")]


async def test_a_pause_smart_turn_did_not_score_counts_as_disputed() -> None:
    """Smart Turn scored the first pause 0.9 but not the second: the finished sentence waits
    the disputed pause, not the short one an earlier pause's score would give."""
    strategy, ended = await listening(StandInSmartTurn(False, 0.9, None))
    await pause_after(strategy, "I'd like a table for")  # unfinished: the long pause
    speech_end = await pause_after(strategy, "I'd like a table for two.")
    deadline = time.time() + 2.0
    while not ended and time.time() < deadline:
        await asyncio.sleep(0.02)
    await strategy.cleanup()
    assert ended and ended_within(ended[0] - speech_end, 0.6), ended


async def test_speech_resuming_cancels_the_early_end() -> None:
    """The user speaks again within the short pause: no end of turn from the first part,
    and no timer left looking at the stale pause."""
    waits = replace(WAITS, complete_pause_secs=0.5)
    strategy, ended = await listening(StandInSmartTurn(True, 0.9), waits)
    await pause_after(strategy, "I'd like a table.")
    assert len(rechecks(strategy)) == 1  # the 0.5 s deadline, pending
    await strategy.process_frame(VADUserStartedSpeakingFrame())
    assert rechecks(strategy) == []
    await asyncio.sleep(0.8)
    await strategy.cleanup()
    assert ended == []


class StandInVAD:
    """The session's VAD as the strategy reads it: a state the test sets."""

    def __init__(self) -> None:
        self.state = VADState.QUIET
        self.params = VADParams(start_secs=0.2)


async def onset_at_deadline(
    then: VADState | None, *, after: float = 0.15
) -> tuple[list[float], float]:
    """The user finishes a complete sentence (0.3 s wait); 0.2 s after the speech the VAD
    starts hearing speech again, unconfirmed (``STARTING``), and ``after`` seconds later its
    state becomes ``then`` (None: stays STARTING; ``SPEAKING``: confirmed and reported).
    Returns when the turn ended (none: []) and when the speech ended."""
    vad = StandInVAD()
    strategy, ended = await listening(StandInSmartTurn(True, 0.9))
    strategy.hear_onsets(vad)
    speech_end = await pause_after(strategy, "I'd like a table.")
    await asyncio.sleep(speech_end + 0.2 - time.time())
    vad.state = VADState.STARTING
    await asyncio.sleep(speech_end + 0.2 + after - time.time())
    if then is VADState.SPEAKING:
        vad.state = then
        await strategy.process_frame(VADUserStartedSpeakingFrame())
    elif then is not None:
        vad.state = then
    await asyncio.sleep(0.6)
    await strategy.cleanup()
    return ended, speech_end


async def test_speech_heard_starting_holds_the_end_until_it_fades() -> None:
    """The VAD hears something like speech as the 0.3 s wait runs out: the turn's end waits;
    it was a noise (back to quiet 0.25 s later): the turn ends then, not at the deadline."""
    ended, speech_end = await onset_at_deadline(VADState.QUIET, after=0.25)
    assert len(ended) == 1 and ended_within(ended[0] - speech_end, 0.45), ended


async def test_speech_heard_starting_and_confirmed_continues_the_turn() -> None:
    """The VAD confirms the speech it began to hear before the wait ran out: no end."""
    ended, _ = await onset_at_deadline(VADState.SPEAKING)
    assert ended == []


async def test_the_hold_lasts_no_longer_than_confirming_speech_takes() -> None:
    """A VAD stuck hearing speech start never confirms it: the turn ends once start_secs and
    a little more have passed the deadline, not never."""
    ended, speech_end = await onset_at_deadline(None)
    assert len(ended) == 1, ended
    limit = 0.3 + 0.2 + ONSET_SLACK_SECS
    assert limit - 0.03 <= ended[0] - speech_end < limit + 0.1, ended[0] - speech_end


def test_the_hold_is_for_speech_heard_starting_or_confirmed_and_not_reported() -> None:
    """Held while the VAD hears speech start or has confirmed it (its event not yet here),
    not when quiet, and no longer than start_secs and the slack after the first look."""
    for state in (VADState.STARTING, VADState.SPEAKING):
        assert onset_holds(state, now=10.1, since=10.0, start_secs=0.2)
        assert not onset_holds(state, now=10.0 + 0.2 + ONSET_SLACK_SECS, since=10.0, start_secs=0.2)
    assert not onset_holds(VADState.QUIET, now=10.0, since=10.0, start_secs=0.2)


async def test_words_that_come_late_still_find_the_hold() -> None:
    """The words come 0.65 s after the speech, well past the 0.3 s wait and the hold's span
    after it, while the VAD hears speech starting; it confirms it 0.15 s later: the hold
    counts from its first look, so the turn goes on."""
    vad = StandInVAD()
    strategy, ended = await listening(StandInSmartTurn(True, 0.9))
    strategy.hear_onsets(vad)
    await strategy.process_frame(VADUserStartedSpeakingFrame())
    speech_end = time.time()
    stop = VADUserStoppedSpeakingFrame(stop_secs=VAD_STOP, timestamp=speech_end + VAD_STOP)
    await strategy.process_frame(stop)
    vad.state = VADState.STARTING
    await asyncio.sleep(speech_end + 0.65 - time.time())
    await strategy.process_frame(finalized("I'd like a table."))
    await asyncio.sleep(0.15)
    vad.state = VADState.SPEAKING
    await strategy.process_frame(VADUserStartedSpeakingFrame())
    await asyncio.sleep(0.4)
    await strategy.cleanup()
    assert ended == []


async def test_without_an_onset_the_turn_ends_at_the_deadline() -> None:
    """A VAD that hears nothing after the pause holds nothing."""
    vad = StandInVAD()
    strategy, ended = await listening(StandInSmartTurn(True, 0.9))
    strategy.hear_onsets(vad)
    speech_end = await pause_after(strategy, "I'd like a table.")
    await asyncio.sleep(0.6)
    await strategy.cleanup()
    assert len(ended) == 1 and ended_within(ended[0] - speech_end, 0.3), ended


def test_the_floor_setting_reaches_the_strategys_waits() -> None:
    """TALKLINE_TURN_MIN_PAUSE_SECS is the waits' floor; unset, it is the waits' default."""
    given = Settings(
        _env_file=None,  # type: ignore[call-arg]
        turn_min_pause_secs=1.2,
        turn_disputed_pause_secs=0.65,
    )
    waits = given.options(TurnWaits, prefix="turn_")
    assert (waits.min_pause_secs, waits.disputed_pause_secs) == (1.2, 0.65)
    default = Settings(_env_file=None)  # type: ignore[call-arg]
    assert default.options(TurnWaits, prefix="turn_") == TurnWaits()


class Recorded:
    """What a speculating strategy told its controller, in order."""

    def __init__(self, strategy: TranscriptTurnStopStrategy):
        self.events: list[tuple[str, str]] = []

        @strategy.event_handler("on_user_turn_inference_triggered")
        async def inference(_strategy: object, speculation: UserTurnSpeculation | None) -> None:
            kind = "speculate" if speculation else "infer"
            self.events.append((kind, speculation.text if speculation else ""))

        @strategy.event_handler("on_user_turn_speculation_cancelled")
        async def withdrawn(_strategy: object) -> None:
            self.events.append(("withdraw", ""))

        @strategy.event_handler("on_user_turn_stopped")
        async def stopped(_strategy: object, params: UserTurnStoppedParams) -> None:
            self.events.append(("stop", "confirms" if params.confirms_speculation else ""))


async def speculating(
    probability: float = 0.9,
) -> tuple[TranscriptTurnStopStrategy, Recorded]:
    """A speculating strategy at the start of a turn (the complete pause: 0.3 s)."""
    strategy = TranscriptTurnStopStrategy(
        turn_analyzer=StandInSmartTurn(probability > 0.5, probability),
        waits=WAITS,
        speculate=True,
    )
    recorded = Recorded(strategy)
    await strategy.setup(processor_setup())
    await strategy.handle_user_turn_started()
    return strategy, recorded


async def test_a_complete_sentence_is_answered_early_and_confirmed_at_the_turns_end() -> None:
    """The words say complete: the answer starts at once, with the turn's words, while the
    wait runs; the end of the wait confirms it (no second inference)."""
    strategy, recorded = await speculating()
    await pause_after(strategy, "I'd like a table.")
    assert recorded.events == [("speculate", "I'd like a table.")]
    await asyncio.sleep(0.5)
    await strategy.cleanup()
    assert recorded.events == [("speculate", "I'd like a table."), ("stop", "confirms")]


async def test_speaking_again_withdraws_the_early_answer() -> None:
    """The user speaks again within the wait: the early answer is withdrawn at once, and
    the turn does not end."""
    strategy, recorded = await speculating()
    await pause_after(strategy, "I'd like a table.")
    await strategy.process_frame(VADUserStartedSpeakingFrame())
    assert recorded.events == [("speculate", "I'd like a table."), ("withdraw", "")]
    await asyncio.sleep(0.5)
    await strategy.cleanup()
    assert [kind for kind, _ in recorded.events] == ["speculate", "withdraw"]


async def test_more_words_withdraw_the_early_answer_and_the_whole_turn_is_answered() -> None:
    """More of the turn is transcribed: the answer to the first part is withdrawn, a new
    one answers both parts, and the end of the wait confirms that one."""
    strategy, recorded = await speculating()
    await pause_after(strategy, "I'd like a table.")
    await strategy.process_frame(finalized("For two."))
    await asyncio.sleep(0.5)
    await strategy.cleanup()
    assert recorded.events == [
        ("speculate", "I'd like a table."),
        ("withdraw", ""),
        ("speculate", "I'd like a table. For two."),
        ("stop", "confirms"),
    ]


async def test_an_interim_transcript_withdraws_the_early_answer() -> None:
    """The recognizer is still at work on more speech: the early answer is withdrawn."""
    strategy, recorded = await speculating()
    await pause_after(strategy, "I'd like a table.")
    await strategy.process_frame(InterimTranscriptionFrame("for", "user", time_now_iso8601()))
    await strategy.cleanup()
    # (what follows is Pipecat's rule with no final words: this stand-in's STT budget is 0)
    assert recorded.events[:2] == [("speculate", "I'd like a table."), ("withdraw", "")]


@pytest.mark.parametrize("text", ["I'd like a table for", "Thanks"])
async def test_words_that_are_not_a_complete_sentence_are_not_answered_early(text: str) -> None:
    """Unfinished or unsure words: the answer starts only when the turn ends."""
    strategy, recorded = await speculating()
    await pause_after(strategy, text)
    await asyncio.sleep(1.4)
    await strategy.cleanup()
    assert recorded.events == [("infer", ""), ("stop", "")]


async def test_a_turn_ended_otherwise_withdraws_the_early_answer() -> None:
    """The turn ends by another way (Pipecat's stop watchdog) while the answer waits: it is
    withdrawn, so that the hold does not release it."""
    strategy, recorded = await speculating()
    await pause_after(strategy, "I'd like a table.")
    await strategy.handle_user_turn_stopped()
    await strategy.cleanup()
    assert recorded.events == [("speculate", "I'd like a table."), ("withdraw", "")]


async def test_words_that_come_after_their_turn_ended_start_no_early_answer() -> None:
    """A late transcript (the turn ended on the earlier words) opens no answer: Pipecat
    would drop it outside a turn but pass on its withdrawal, and the hold would count that
    against the next turn's early answer, leaving that turn unanswered."""
    strategy, recorded = await speculating()
    await pause_after(strategy, "I'd like a table for")
    await strategy.handle_user_turn_stopped()
    await strategy.process_frame(finalized("For two."))
    await strategy.handle_user_turn_started()
    await strategy.cleanup()
    assert recorded.events == []


def test_speculation_is_a_setting_on_by_default() -> None:
    """TALKLINE_TURN_SPECULATE: on unless turned off, and only for the transcript strategy."""
    assert speculates(Settings(_env_file=None))  # type: ignore[call-arg]
    off = Settings(_env_file=None, turn_speculate=False)  # type: ignore[call-arg]
    silence = Settings(_env_file=None, turn_strategy="silence")  # type: ignore[call-arg]
    assert not speculates(off) and not speculates(silence)
