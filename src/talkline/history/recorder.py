"""One session's record and transcript, as its pipeline sees it, handed to the writer.

``SessionHistory`` is an observer of the session's pipeline. A user turn is what the user
said (final transcriptions) up to the bot's answer; a bot turn is what the output transport
passed on while the bot spoke, with the response latency and whether the user interrupted
it. Each finished turn, and the session's start and end, hand a full snapshot of the
session's row to the writer: a crash loses at most the turn in flight.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    InterruptionFrame,
    TextFrame,
    TranscriptionFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_output import BaseOutputTransport

from talkline.history.store import utcnow

DOWNSTREAM = FrameDirection.DOWNSTREAM


class Writes(Protocol):
    """Where rows go (``HistoryWriter``): calls that never wait."""

    def put_session(self, row: dict[str, Any]) -> None: ...

    def put_turn(self, row: dict[str, Any]) -> None: ...


@dataclass
class Counters:
    """The session's numbers, read from its parts when a snapshot is taken."""

    latencies: Callable[[], Sequence[float]] = lambda: ()
    reconnects: Callable[[], int] = lambda: 0
    tokens: Callable[[], int] = lambda: 0
    bad_inputs: Callable[[], int] = lambda: 0


SEQ_SPAN = 100_000  # transcript places per connection of one conversation (see continues)


@dataclass
class Earlier:
    """What a resumed conversation's earlier connections recorded, counted in its row."""

    turns: int = 0
    latencies: tuple[float, ...] = ()
    reconnects: int = 0
    tokens: int = 0
    bad_inputs: int = 0


@dataclass
class OpenTurn:
    role: str
    at: datetime
    seq: int
    text: str = ""
    interrupted: bool = False
    latency: float | None = None

    def add(self, text: str, spaced: bool) -> None:
        """Append ``text``; ``spaced``: it carries its own spaces (streamed word pieces)."""
        if spaced:
            self.text += text
        elif text.strip():
            self.text = f"{self.text} {text.strip()}" if self.text else text.strip()


def percentile_ms(latencies: Sequence[float], fraction: float) -> float | None:
    """The ``fraction`` percentile in milliseconds (nearest rank, as the session log)."""
    if not latencies:
        return None
    ms = sorted(latency * 1000 for latency in latencies)
    if fraction == 0.5:
        return float(statistics.median(ms))
    return ms[min(len(ms) - 1, round(fraction * (len(ms) - 1)))]


class SessionHistory(BaseObserver):
    """Records one session: its row at start, after each turn and at its end."""

    ignores_audio = True  # talkline.observer keeps audio frames away from it

    def __init__(self, writer: Writes, identity: Mapping[str, Any], *, transcripts: bool = True):
        super().__init__()  # every push: bot words are read as the output transport sends them
        self._writer = writer
        self._identity = dict(identity) | {"started_at": utcnow()}
        self._transcripts = transcripts
        self.counters = Counters()
        self.resumes = 0  # see continues()
        self._seq = 0
        self._first_seq = 0  # this connection's turns are numbered after it
        self._earlier = Earlier()
        self._row_held = False  # a resumed connection's, until the earlier one is read back
        self._superseded = False  # a later connection of the conversation writes the row
        self._user: OpenTurn | None = None
        self._bot: OpenTurn | None = None
        self._latency: float | None = None  # the answer under way's
        self._bot_turns = 0
        self._ended: dict[str, Any] | None = None

    @property
    def session_id(self) -> str:
        return str(self._identity["id"])

    # --- hooks the session calls -----------------------------------------------------------
    def started(self) -> None:
        self._put_session()

    def continues(self, epoch: int, started: float) -> None:
        """This connection resumes its conversation, as connection ``epoch`` (the first is
        1), begun at ``started`` (wall clock). Each connection writes its turns from
        ``(epoch - 1) * SEQ_SPAN`` on, so none overwrites an earlier connection's, and the
        transcript reads in order; the row keeps the conversation's start and counts the
        resumes. Call before ``started``. The row itself waits for ``recall`` (or
        ``recalled_nothing``): written first, it would replace the earlier connections'
        record before their numbers were read back."""
        self._seq = self._first_seq = (epoch - 1) * SEQ_SPAN
        self.resumes = epoch - 1
        self._identity["started_at"] = datetime.fromtimestamp(started, UTC).replace(tzinfo=None)
        self._row_held = True

    def recall(self, row: Mapping[str, Any], turns: Sequence[Mapping[str, Any]]) -> None:
        """The conversation as the store holds it (read back after a resume): the earlier
        connections' answers, latencies and counts go into this connection's row, which
        is written from now on. A row a later connection wrote (it resumed again) is left
        as it is, and so is everything this connection would write after it."""
        if int(row.get("resumes") or 0) > self.resumes:
            self._superseded = True
            return
        answers = [t for t in turns if t["seq"] <= self._first_seq and t["role"] == "bot"]
        self._earlier = Earlier(
            turns=int(row.get("turns") or 0),
            latencies=tuple(t["latency_ms"] / 1000 for t in answers if t["latency_ms"] is not None),
            reconnects=int(row.get("upstream_reconnects") or 0),
            tokens=int(row.get("llm_tokens") or 0),
            bad_inputs=int(row.get("bad_inputs") or 0),
        )
        self.recalled_nothing()

    def recalled_nothing(self) -> None:
        """No earlier record could be read: the row counts this connection alone."""
        self._row_held = False
        self._put_session()

    def _put_session(self) -> None:
        if not self._row_held and not self._superseded:
            self._writer.put_session(self.snapshot())

    def answered(self, latency: float | None) -> None:
        """The session's observer saw an answer start, ``latency`` after the user stopped."""
        if latency is not None:
            self._latency = latency

    def ended(self, end_reason: str, duration: float) -> None:
        """Close what is open and write the final row (again if the reason changes)."""
        self._close_user()
        self._close_bot()
        self._ended = {"ended_at": utcnow(), "duration_secs": duration, "end_reason": end_reason}
        self._put_session()

    def snapshot(self) -> dict[str, Any]:
        counters, earlier = self.counters, self._earlier
        latencies = [*earlier.latencies, *counters.latencies()]
        row = self._identity | {
            "turns": earlier.turns + self._bot_turns,
            "latency_p50_ms": percentile_ms(latencies, 0.5),
            "latency_p95_ms": percentile_ms(latencies, 0.95),
            "upstream_reconnects": earlier.reconnects + counters.reconnects(),
            "resumes": self.resumes,
            "llm_tokens": earlier.tokens + counters.tokens(),
            "bad_inputs": earlier.bad_inputs + counters.bad_inputs(),
        }
        return row | (self._ended or {"ended_at": None, "duration_secs": None, "end_reason": None})

    # --- what the pipeline shows -----------------------------------------------------------
    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        if isinstance(frame, TTSTextFrame):
            if isinstance(data.source, BaseOutputTransport):  # spoken now, not just written
                self._bot_said(frame)
            return
        upstream_copy = frame.broadcast_sibling_id is not None and data.direction != DOWNSTREAM
        if not data.first_push or upstream_copy:  # speaking frames go both ways: count once
            return
        if isinstance(frame, UserStartedSpeakingFrame):
            self._user_started()
        elif isinstance(frame, TranscriptionFrame):
            self._user_said(frame)
        elif isinstance(frame, BotStartedSpeakingFrame):
            self._close_user(heard_only=True)
            self._bot_started()
        elif isinstance(frame, InterruptionFrame) and self._bot is not None:
            self._bot.interrupted = True
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._close_bot()
            self._close_user(heard_only=True)

    def _user_started(self) -> None:
        """A user turn opens when the user starts speaking: its place in the transcript is
        then, even when its words come later (Gemini transcribes after answering)."""
        if self._user is not None and self._user.text:
            self._close_user()
        self._open_user()

    def _open_user(self) -> OpenTurn:
        if self._user is None:
            self._user = OpenTurn("user", utcnow(), seq=self._next_seq())
        return self._user

    def _user_said(self, frame: TextFrame) -> None:
        if frame.text.strip():
            self._open_user().add(frame.text, frame.includes_inter_frame_spaces)

    def _bot_started(self) -> OpenTurn:
        if self._bot is None:
            self._bot = OpenTurn("bot", utcnow(), seq=self._next_seq())
            self._bot_turns += 1
        return self._bot

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _bot_said(self, frame: TextFrame) -> None:
        if frame.text.strip():
            self._bot_started().add(frame.text, frame.includes_inter_frame_spaces)

    def _close_user(self, *, heard_only: bool = False) -> None:
        """Write the user's turn; with ``heard_only``, only once its words have come."""
        turn = self._user
        if turn is None or (heard_only and not turn.text):
            return
        self._user = None
        if turn.text:
            self._write_turn(turn)

    def _close_bot(self) -> None:
        turn, self._bot = self._bot, None
        if turn is None:
            return
        turn.latency, self._latency = self._latency, None
        self._write_turn(turn)

    def _write_turn(self, turn: OpenTurn) -> None:
        if self._transcripts:
            self._writer.put_turn(
                {
                    "session_id": self.session_id,
                    "seq": turn.seq,
                    "role": turn.role,
                    "at": turn.at,
                    "text": turn.text.strip(),
                    "interrupted": turn.interrupted,
                    "latency_ms": None if turn.latency is None else turn.latency * 1000,
                }
            )
        self._put_session()
