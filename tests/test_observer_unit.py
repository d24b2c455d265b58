"""SessionObserver alone: turns, latency, tokens and errors, on a clock the test moves."""

from __future__ import annotations

import pytest
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    ErrorFrame,
    MetricsFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import LLMTokenUsage, LLMUsageMetricsData, TTFBMetricsData
from pipecat.processors.frame_processor import FrameDirection

import talkline.observer
from talkline.observer import ANSWER_WAIT_SECS, SessionObserver
from tests.support import Clock, pushed


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(talkline.observer.time, "monotonic", fake)
    return fake


def usage(total: int | None) -> LLMUsageMetricsData:
    tokens = LLMTokenUsage(prompt_tokens=1, completion_tokens=1, total_tokens=total or 0)
    if total is None:
        tokens.total_tokens = None  # type: ignore[assignment]
    return LLMUsageMetricsData(processor="llm", value=tokens)


async def test_a_fresh_observer_is_idle_with_nothing_counted() -> None:
    observer = SessionObserver(vad_stop_secs=0.2)
    assert observer.user_speaking is False and observer.bot_speaking is False
    assert (observer.turns, observer.tokens, observer.latencies) == (0, 0, [])
    assert observer.errors == {} and observer.latency_summary() == "latency n/a"
    assert observer.on_turn(1.0) is None


async def test_each_answer_is_a_turn_with_its_latency(clock: Clock) -> None:
    """Latency runs from the real end of speech (the VAD's stop minus stop_secs)."""
    observer = SessionObserver(vad_stop_secs=0.2)
    heard: list[float | None] = []
    observer.on_turn = heard.append
    for latency in (0.5, 0.9):
        await observer.on_push_frame(pushed(UserStartedSpeakingFrame()))
        await observer.on_push_frame(pushed(UserStoppedSpeakingFrame()))
        await observer.on_push_frame(pushed(VADUserStoppedSpeakingFrame()))
        clock.advance(latency - 0.2)
        await observer.on_push_frame(pushed(BotStartedSpeakingFrame()))
        await observer.on_push_frame(pushed(BotStoppedSpeakingFrame()))
        assert observer.user_speaking is False and observer.bot_speaking is False
    assert observer.turns == 2
    assert heard == pytest.approx([0.5, 0.9]) and observer.latencies == pytest.approx(heard)


async def test_an_answer_announced_both_ways_is_one_turn() -> None:
    """The output transport pushes BotStartedSpeakingFrame downstream and upstream."""
    observer = SessionObserver(vad_stop_secs=0.2)
    heard: list[float | None] = []
    observer.on_turn = heard.append
    await observer.on_push_frame(pushed(BotStartedSpeakingFrame()))
    await observer.on_push_frame(
        pushed(BotStartedSpeakingFrame(), direction=FrameDirection.UPSTREAM)
    )
    assert observer.turns == 1 and heard == [None] and observer.bot_speaking


async def test_an_answer_with_no_speech_before_has_no_latency() -> None:
    observer = SessionObserver(vad_stop_secs=0.2)
    heard: list[float | None] = []
    observer.on_turn = heard.append
    await observer.on_push_frame(pushed(BotStartedSpeakingFrame()))
    assert heard == [None] and observer.latencies == [] and observer.turns == 1


async def test_the_answer_wait_ends_exactly_after_answer_wait_secs(clock: Clock) -> None:
    observer = SessionObserver(vad_stop_secs=0.0)
    await observer.on_push_frame(pushed(VADUserStoppedSpeakingFrame()))
    clock.advance(ANSWER_WAIT_SECS - 1)
    assert observer.busy()
    clock.advance(1)
    assert not observer.busy()


async def test_errors_are_counted_by_kind() -> None:
    observer = SessionObserver(vad_stop_secs=0.2)
    for fatal in (False, False, True):
        frame = ErrorFrame("x")
        frame.fatal = fatal  # set after creation: the constructor argument is deprecated
        await observer.on_push_frame(pushed(frame))
    assert observer.errors == {"error": 2, "fatal": 1}


async def test_tokens_are_summed_from_usage_metrics() -> None:
    observer = SessionObserver(vad_stop_secs=0.2)
    await observer.on_push_frame(pushed(MetricsFrame(data=[usage(7), usage(None)])))
    await observer.on_push_frame(
        pushed(MetricsFrame(data=[TTFBMetricsData(processor="x", value=1.0), usage(5)]))
    )
    assert observer.tokens == 12


@pytest.mark.parametrize(
    ("latencies", "summary"),
    [
        ([0.1], "latency p50 100 ms p95 100 ms"),
        ([1.0], "latency p50 1000 ms p95 1000 ms"),
        ([0.3, 0.1, 0.2], "latency p50 200 ms p95 300 ms"),
        ([i / 100 for i in range(1, 21)], "latency p50 105 ms p95 190 ms"),
    ],
)
def test_latency_summary_gives_the_median_and_p95(latencies: list[float], summary: str) -> None:
    observer = SessionObserver(vad_stop_secs=0.2)
    observer.latencies = latencies
    assert observer.latency_summary() == summary
