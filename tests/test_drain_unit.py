"""A session's part of a drain, alone: wait while a turn is under way, then close 1001.

``Session.drain`` runs here against a stand-in session (its observer, notice and close are
recorded); the end-to-end SIGTERM tests in test_shutdown.py check what a user hears.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)

import talkline.observer
import talkline.session
from talkline.admission import SessionRecord
from talkline.lifecycle import EndReason
from talkline.observer import ANSWER_WAIT_SECS, SessionObserver
from talkline.session import Session
from tests.support import pushed


class BusyFor:
    """An observer whose turn stays under way for ``polls`` calls of ``busy()``."""

    def __init__(self, polls: int | None):
        self.polls = polls
        self.asked = 0

    def busy(self) -> bool:
        self.asked += 1
        return self.polls is None or self.asked <= self.polls


class StandIn:
    """What ``Session.drain`` touches of a session, recorded."""

    def __init__(self, observer: BusyFor):
        self.record = SessionRecord(id="s1", client="a")
        self.link = None  # not resumable: a plain drain
        self.observer = observer
        self.notices: list[tuple[str, str]] = []
        self.ended: list[tuple[Any, ...]] = []

    async def _notify(self, reason: EndReason, message: str) -> None:
        self.notices.append((reason.label, message))
        logger.info("notifying")  # to see the session's id in the log context

    def end(
        self, reason: EndReason, message: str, *, notify: bool = True, error: str | None = None
    ) -> None:
        self.ended.append((reason.label, message, reason.close_code, notify, self.observer.asked))


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(talkline.session, "DRAIN_POLL_SECS", 0.001)


async def drain(session: StandIn, seconds_left: float) -> None:
    deadline = asyncio.get_running_loop().time() + seconds_left
    async with asyncio.timeout(5):  # a drain that waits with nothing under way fails here
        await Session.drain(session, deadline)  # type: ignore[arg-type]


async def test_drain_tells_the_client_then_closes_1001_without_a_second_notice() -> None:
    session = StandIn(BusyFor(0))
    await drain(session, 30)
    assert session.notices == [
        (
            EndReason.SERVER_SHUTDOWN.label,
            "The server is shutting down; this session ends after the current answer.",
        )
    ]
    shutdown = EndReason.SERVER_SHUTDOWN
    assert session.ended == [(shutdown.label, "server shutting down", 1001, False, 1)]


async def test_drain_logs_under_the_session_s_id() -> None:
    contexts: list[object] = []
    sink = logger.add(lambda message: contexts.append(message.record["extra"].get("session_id")))
    try:
        await drain(StandIn(BusyFor(0)), 30)
    finally:
        logger.remove(sink)
    assert contexts == ["s1"]


async def test_drain_closes_only_once_the_turn_is_over() -> None:
    """Busy for 20 polls: the close comes after the 21st question, not before."""
    session = StandIn(BusyFor(20))
    await drain(session, 30)
    assert [end[4] for end in session.ended] == [21]


async def test_drain_closes_at_the_deadline_when_the_turn_never_ends() -> None:
    session = StandIn(BusyFor(None))
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(5):
        await drain(session, 0.2)
    assert loop.time() - started >= 0.2
    assert len(session.ended) == 1 and session.ended[0][2] == 1001


async def test_the_observer_is_busy_while_the_user_speaks() -> None:
    observer = SessionObserver(vad_stop_secs=0.2)
    assert not observer.busy()
    await observer.on_push_frame(pushed(UserStartedSpeakingFrame()))
    assert observer.busy()
    await observer.on_push_frame(pushed(UserStoppedSpeakingFrame()))
    assert not observer.busy()


async def test_the_observer_is_busy_while_the_answer_is_awaited_then_spoken() -> None:
    observer = SessionObserver(vad_stop_secs=0.2)
    await observer.on_push_frame(pushed(VADUserStoppedSpeakingFrame()))
    assert observer.busy(), "the user has stopped; the answer is still coming"
    await observer.on_push_frame(pushed(BotStartedSpeakingFrame()))
    assert observer.busy() and observer.turns == 1 and len(observer.latencies) == 1
    assert observer.latencies[0] >= 0.2  # the VAD reports the stop after stop_secs
    await observer.on_push_frame(pushed(BotStoppedSpeakingFrame()))
    assert not observer.busy()


async def test_an_answer_that_never_comes_stops_being_awaited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    observer = SessionObserver(vad_stop_secs=0.2)
    now = [100.0]
    monkeypatch.setattr(talkline.observer.time, "monotonic", lambda: now[0])
    await observer.on_push_frame(pushed(VADUserStoppedSpeakingFrame()))
    now[0] += ANSWER_WAIT_SECS - 0.3  # the stop is dated 0.2 s before the VAD said so
    assert observer.busy()
    now[0] += 0.2
    assert not observer.busy()


async def test_frames_seen_again_downstream_are_not_counted_twice() -> None:
    observer = SessionObserver(vad_stop_secs=0.2)
    await observer.on_push_frame(pushed(BotStartedSpeakingFrame(), first=False))
    assert not observer.busy() and observer.turns == 0
