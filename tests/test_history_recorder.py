"""``SessionHistory`` alone: which frames make which turns, and what a snapshot holds."""

from __future__ import annotations

import asyncio
from typing import Any

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    InterruptionFrame,
    TranscriptionFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
)
from pipecat.observers.base_observer import FramePushed
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import TransportParams
from prometheus_client import CollectorRegistry

from talkline.history import service
from talkline.history.recorder import SessionHistory
from talkline.observer import reads_audio
from tests.support import pushed


class Rows:
    """The writer's two calls, kept."""

    def __init__(self) -> None:
        self.sessions: list[dict[str, Any]] = []
        self.turns: list[dict[str, Any]] = []

    def put_session(self, row: dict[str, Any]) -> None:
        self.sessions.append(row)

    def put_turn(self, row: dict[str, Any]) -> None:
        self.turns.append(row)


def spoken(text: str) -> FramePushed:
    """``text`` as the output transport passes it on while the bot speaks."""
    output = BaseOutputTransport(TransportParams())
    frame = TTSTextFrame(text, text_type="sentence")
    return FramePushed(output, None, frame, FrameDirection.DOWNSTREAM, 0, False)  # type: ignore[arg-type]


def recorder(rows: Rows, transcripts: bool = True) -> SessionHistory:
    identity = {"id": "s1", "replica": "r", "client": "127.0.0.1", "brain": "local",
                "about": {"brain": "local"}, "api_key_id": None}  # fmt: skip
    return SessionHistory(rows, identity, transcripts=transcripts)


async def interrupted_exchange(history: SessionHistory) -> None:
    await history.on_push_frame(pushed(TranscriptionFrame("Tell me", "u", "t")))
    await history.on_push_frame(pushed(TranscriptionFrame("a story.", "u", "t")))
    await history.on_push_frame(pushed(BotStartedSpeakingFrame()))
    history.answered(0.6)
    await history.on_push_frame(spoken("Once upon"))
    await history.on_push_frame(pushed(InterruptionFrame()))
    await history.on_push_frame(pushed(BotStoppedSpeakingFrame()))


async def test_an_interrupted_answer_is_a_bot_turn_marked_interrupted() -> None:
    """User words up to the answer make one turn; the bot's, cut off, another."""
    rows = Rows()
    history = recorder(rows)
    await interrupted_exchange(history)
    user, bot = rows.turns
    assert (user["role"], user["text"], user["seq"]) == ("user", "Tell me a story.", 1)
    assert (bot["role"], bot["text"], bot["interrupted"]) == ("bot", "Once upon", True)
    assert bot["latency_ms"] == 600.0
    assert rows.sessions[-1]["turns"] == 1 and rows.sessions[-1]["end_reason"] is None


async def test_with_transcripts_off_the_record_stays_and_no_words_are_kept() -> None:
    rows = Rows()
    history = recorder(rows, transcripts=False)
    history.started()
    await interrupted_exchange(history)
    history.ended("idle-timeout", 12.5)
    assert rows.turns == []
    final = rows.sessions[-1]
    assert final["turns"] == 1 and final["end_reason"] == "idle-timeout"
    assert final["duration_secs"] == 12.5 and final["ended_at"] is not None


async def test_a_turn_in_flight_is_written_when_the_session_ends() -> None:
    rows = Rows()
    history = recorder(rows)
    await history.on_push_frame(pushed(TranscriptionFrame("Hello?", "u", "t")))
    history.ended("client-disconnected", 3.0)
    assert [t["text"] for t in rows.turns] == ["Hello?"]


def test_the_recorder_keeps_audio_frames_away_from_observers() -> None:
    """Its presence must not send every audio frame through the observers' queues."""
    assert not reads_audio(recorder(Rows()))


async def test_words_transcribed_after_the_answer_keep_their_place() -> None:
    """Gemini transcribes the user after it starts answering: the user's turn still comes
    first, at the time the user started speaking; speech without words leaves no turn."""
    rows = Rows()
    history = recorder(rows)
    await history.on_push_frame(pushed(UserStartedSpeakingFrame()))
    await history.on_push_frame(pushed(BotStartedSpeakingFrame()))
    await history.on_push_frame(spoken("reply 1"))
    await history.on_push_frame(pushed(TranscriptionFrame("turn 1", "u", "t")))
    await history.on_push_frame(pushed(BotStoppedSpeakingFrame()))
    await history.on_push_frame(pushed(UserStartedSpeakingFrame()))  # a cough: no words
    history.ended("client-disconnected", 5.0)
    ordered = sorted(rows.turns, key=lambda turn: turn["seq"])
    assert [(t["role"], t["text"]) for t in ordered] == [("user", "turn 1"), ("bot", "reply 1")]
    assert ordered[0]["at"] < ordered[1]["at"]


async def answer(history: SessionHistory, said: str, reply: str, latency: float) -> None:
    await history.on_push_frame(pushed(UserStartedSpeakingFrame()))
    await history.on_push_frame(pushed(TranscriptionFrame(said, "u", "t")))
    await history.on_push_frame(pushed(BotStartedSpeakingFrame()))
    history.answered(latency)
    await history.on_push_frame(spoken(reply))
    await history.on_push_frame(pushed(BotStoppedSpeakingFrame()))


class Store(Rows):
    """The database as the writer leaves it: one row per session (the newest write replaces
    it, as the store's upsert does) and one row per turn number."""

    @property
    def row(self) -> dict[str, Any]:
        return self.sessions[-1]

    def transcript(self) -> list[dict[str, Any]]:
        by_seq = {turn["seq"]: turn for turn in self.turns}
        return [by_seq[seq] for seq in sorted(by_seq)]


async def two_connections(store: Store) -> SessionHistory:
    """Connection 1 answers twice and drops; connection 2 resumes and answers once."""
    first = recorder(store)
    first.counters.tokens = lambda: 7
    first.started()
    await answer(first, "turn 1", "reply 1", 0.5)
    await answer(first, "turn 2", "reply 2", 0.7)
    first.ended("client-disconnected", 4.0)
    second = recorder(store)
    second.continues(epoch=2, started=1_700_000_000.0)
    second.counters.tokens = lambda: 3
    second.counters.latencies = lambda: [0.9]  # the session's observer's, this connection
    second.started()
    await answer(second, "turn 3", "reply 3", 0.9)
    return second


async def test_a_resumed_connection_goes_on_after_the_earlier_ones() -> None:
    """Connection 2 numbers its turns after connection 1's (none is overwritten) and holds
    its row until connection 1's is read back: then the row keeps the conversation's start,
    counts the resume and all three answers, their latencies and both connections' tokens."""
    store = Store()
    second = await two_connections(store)
    assert store.row["resumes"] == 0, "connection 1's record is not replaced before it is read"
    second.recall(store.row, store.transcript())
    second.ended("client-disconnected", 2.0)

    expected = ["turn 1", "reply 1", "turn 2", "reply 2", "turn 3", "reply 3"]
    assert [t["text"] for t in store.transcript()] == expected
    final = store.row
    assert final["turns"] == 3 and final["resumes"] == 1 and final["llm_tokens"] == 10
    assert final["latency_p50_ms"] == 700 and final["latency_p95_ms"] == 900
    assert final["started_at"].isoformat() == "2023-11-14T22:13:20"


async def test_with_nothing_read_back_the_row_counts_this_connection() -> None:
    store = Store()
    second = await two_connections(store)
    second.recalled_nothing()
    assert store.row["resumes"] == 1 and store.row["turns"] == 1 and store.row["llm_tokens"] == 3


async def test_a_row_a_later_connection_wrote_is_left_as_it_is() -> None:
    """Read back late (the database was down), the row is already a later connection's:
    this one writes no row over it, then or at its end."""
    store = Store()
    second = await two_connections(store)
    later = store.row | {"resumes": 2, "turns": 5}
    store.put_session(later)
    second.recall(later, store.transcript())
    second.ended("client-disconnected", 2.0)
    assert store.row == later


class FlakyStore:
    """A store that fails ``failures`` reads, then finds the earlier connection's record."""

    def __init__(self, failures: int, found: tuple[dict[str, Any], list[dict[str, Any]]]):
        self.failures = failures
        self.found = found
        self.reads = 0

    async def get_session(self, session_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        self.reads += 1
        if self.reads <= self.failures:
            raise OSError("connection refused by postgresql://talk:hunter2@db/history")
        return self.found


async def resumed_after(failures: int, monkeypatch: Any, logged: list[str]) -> dict[str, Any]:
    """The resumed connection's last row, its earlier record read back after ``failures``."""
    monkeypatch.setattr(service, "RECALL_TRIES_SECS", (0.0, 0.0, 0.0))
    first_rows = Rows()
    first = recorder(first_rows)
    await answer(first, "turn 1", "reply 1", 0.5)
    history = service.History(
        service.HistoryOptions(url="sqlite+aiosqlite:///unused.db", replica="r"),
        CollectorRegistry(),
    )
    rows = Rows()
    second = recorder(rows)
    history.store = FlakyStore(failures, (first_rows.sessions[-1], first_rows.turns))  # type: ignore[assignment]
    history.resumed(second, epoch=2, started=1_700_000_000.0)
    second.started()
    for _ in range(20):
        await asyncio.sleep(0)
    return rows.sessions[-1]


async def test_the_earlier_record_is_read_back_once_the_database_answers(
    monkeypatch: Any, logged: list[str]
) -> None:
    assert (await resumed_after(2, monkeypatch, logged))["turns"] == 1
    assert not [line for line in logged if "could not read back" in line]


async def test_a_database_that_never_answers_is_logged_without_its_address(
    monkeypatch: Any, logged: list[str]
) -> None:
    assert (await resumed_after(3, monkeypatch, logged))["turns"] == 0
    failed = [line for line in logged if "could not read back" in line]
    assert len(failed) == 1 and "OSError" in failed[0] and "hunter2" not in "".join(logged)
