"""The hold on a speculative answer: Pipecat's SpeculationGate after the TTS.

Driven through a small Pipecat pipeline (marker → echo responder → stand-in delay → gate)
with Pipecat's own test runner; the delay stands for a TTS still busy with an earlier answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    Frame,
    LLMContextFrame,
    LLMContextUserTurnFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    SystemFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import SleepFrame, run_test
from pydantic import BaseModel

from talkline.services.responder import EchoResponder
from talkline.services.speculation import (
    KEPT_VERDICTS,
    HeldAnswerRTVIObserver,
    HeldSpeechGate,
    SpeculationMarker,
    SpeculativeAnswerStartFrame,
)


class Delay(FrameProcessor):
    """Holds back frames of one kind for a while, as a busy TTS would (system frames pass)."""

    def __init__(self, kind: type[Frame] | None = None, secs: float = 0.3):
        super().__init__()
        self._kind, self._secs = kind, secs

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if self._kind is not None and isinstance(frame, self._kind):
            await asyncio.sleep(self._secs)
        await self.push_frame(frame, direction)


def asked(text: str, *, speculation: bool) -> LLMContextFrame:
    """The user aggregator asking for an answer to ``text`` (speculation: early)."""
    context = LLMContext(messages=[{"role": "user", "content": text}])
    return LLMContextFrame(context=context, speculation=speculation)


class Told(HeldAnswerRTVIObserver):
    """The RTVI observer of a session with early answers, keeping what it would send."""

    def __init__(self) -> None:
        super().__init__(None)
        self.sent: list[tuple[str, str]] = []

    async def send_rtvi_message(self, model: BaseModel, exclude_none: bool = True) -> None:
        data = getattr(model, "data", None)
        self.sent.append((str(getattr(model, "type", "")), str(getattr(data, "text", ""))))

    def words(self) -> list[str]:
        """The answers' words as bot-llm-text told them."""
        return [text.strip() for kind, text in self.sent if kind == "bot-llm-text"]

    def count(self, kind: str) -> int:
        return sum(1 for sent, _ in self.sent if sent == kind)


async def said(
    frames: Sequence[Frame], delay: type[Frame] | None = None, told: list[Told] | None = None
) -> list[str]:
    """What reaches the output, in order: the answers' words and "<end of turn>". ``told``
    gets the RTVI observer, whose reports are checked against what was said."""
    marker = SpeculationMarker(responder_holds=False)
    observer = Told()
    pipeline = Pipeline([marker, EchoResponder(), Delay(delay), HeldSpeechGate()])
    down, _up = await run_test(pipeline, frames_to_send=frames, observers=[observer])
    spoken = []
    for frame in down:
        if isinstance(frame, UserStoppedSpeakingFrame):
            spoken.append("<end of turn>")
        elif isinstance(frame, LLMTextFrame):
            spoken.append(frame.text.strip())
    # the client is told of exactly the answers it hears, each started and ended once
    assert observer.words() == [words for words in spoken if words != "<end of turn>"]
    answers = sum(1 for words in spoken if words == "You said:")
    assert observer.count("bot-llm-started") == observer.count("bot-llm-stopped") == answers
    assert observer.count("bot-tts-started") == 0  # this pipeline's "TTS" starts nothing
    if told is not None:
        told.append(observer)
    return spoken


async def test_an_early_answer_waits_for_the_end_of_the_turn() -> None:
    """Ready long before the turn ends, the answer is let out only then, whole."""
    spoken = await said([asked("Hi.", speculation=True), SleepFrame(0.3), ended()])
    assert spoken == ["<end of turn>", "You said:", "Hi."]


async def test_the_client_is_told_of_an_early_answer_after_the_turn_ends() -> None:
    """The held answer's reports come once the turn has ended, after the client is told so
    (bot-llm-started after user-stopped-speaking), though they were made long before."""
    told: list[Told] = []
    await said([asked("Hi.", speculation=True), SleepFrame(0.3), ended()], told=told)
    kinds = [kind for kind, _ in told[0].sent]
    assert kinds.index("user-stopped-speaking") < kinds.index("bot-llm-started"), kinds


async def test_an_early_answer_to_a_turn_already_over_is_told_at_once() -> None:
    """Asked early, but the turn ended before the answer reached the hold: nothing is held,
    and the client is told of it (``said`` checks the reports against the words)."""
    spoken = await said([ended(), SleepFrame(0.1), asked("Hi.", speculation=True)])
    assert spoken == ["<end of turn>", "You said:", "Hi."]


async def test_an_early_answer_superseded_by_another_is_neither_heard_nor_told() -> None:
    """A second early answer while the first is held: the first is dropped, the second
    heard and told when the turn ends."""
    frames = [
        asked("Hi.", speculation=True),
        SleepFrame(0.2),
        asked("Hi. There.", speculation=True),
        SleepFrame(0.2),
        ended(),
        SleepFrame(0.2),
    ]
    spoken = await said(frames)
    assert spoken == ["<end of turn>", "You said:", "Hi. There."]


async def test_an_answer_to_a_turn_already_ended_is_not_held() -> None:
    """An ordinary answer (the turn has ended) goes straight out."""
    spoken = await said([ended(), SleepFrame(0.1), asked("Hi.", speculation=False)])
    assert spoken == ["<end of turn>", "You said:", "Hi."]


@pytest.mark.parametrize(
    "late",
    [None, SpeculativeAnswerStartFrame, LLMFullResponseStartFrame],
    ids=["held", "withdrawn-before-it-came", "withdrawn-before-its-words"],
)
async def test_a_withdrawn_early_answer_is_never_heard(late: type[Frame] | None) -> None:
    """The user went on: the early answer is dropped, whether it is held already or still
    on its way to the hold, and only the answer to the whole turn is heard."""
    frames = [
        asked("Hi.", speculation=True),
        SleepFrame(0.05),
        EagerEndOfTurnCancelFrame(),
        SleepFrame(0.6),
        ended(),
        asked("Hi. There.", speculation=False),
        SleepFrame(0.5),
    ]
    spoken = await said(frames, delay=late)
    assert spoken == ["<end of turn>", "You said:", "Hi. There."]


def ended() -> SystemFrame:
    return UserStoppedSpeakingFrame()


async def test_an_answer_withdrawn_while_held_leaves_nothing_after_it_dropped() -> None:
    """Withdrawn halfway through (its words still coming): the rest of it is dropped, and
    what comes after it is not (here the user's turn as written to the context)."""
    written = LLMContextUserTurnFrame(text="Hi. There.", timestamp="")
    frames = [
        asked("Hi.", speculation=True),
        SleepFrame(0.1),
        EagerEndOfTurnCancelFrame(),
        SleepFrame(0.8),
        ended(),
        written,
        asked("Hi. There.", speculation=False),
        SleepFrame(0.8),
    ]
    pipeline = Pipeline(
        [
            SpeculationMarker(responder_holds=False),
            EchoResponder(),
            Delay(LLMTextFrame),
            HeldSpeechGate(),
        ]
    )
    down, _up = await run_test(pipeline, frames_to_send=frames)
    texts = [frame.text.strip() for frame in down if isinstance(frame, LLMTextFrame)]
    assert texts == ["You said:", "Hi. There."]
    assert any(isinstance(frame, LLMContextUserTurnFrame) for frame in down)


async def test_a_long_session_keeps_only_its_newest_verdicts() -> None:
    observer = Told()
    for number in range(1, 201):
        await observer._decided(number, released=number % 2 == 0)
    assert sorted(observer._verdicts) == list(range(201 - KEPT_VERDICTS, 201))
