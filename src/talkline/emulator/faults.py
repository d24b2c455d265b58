"""Failures the emulator injects on demand, each firing at most once."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .wire import CLOSE_INTERNAL_ERROR, REASON_INTERNAL


class FaultKind(enum.Enum):
    """What happens when a fault fires."""

    GO_AWAY = "go_away"  # send goAway(timeLeft), then close 1011 when the time is up
    CLOSE = "close"  # close with `code` and `reason`
    STALL = "stall"  # stop answering; keep reading and recording input
    DROP = "drop"  # abort the TCP connection without a close frame


@dataclass
class Fault:
    """One failure and the moment it fires; set exactly one of the `after_*` triggers.

    after_turn: right after turnComplete of conversation turn N (1-based; resumed
        conversations keep counting).
    after_reply_chunks: right after the K-th audio chunk of a reply is sent (mid-reply);
        `turn` narrows it to the reply of that turn.
    after_seconds: T seconds after setupComplete.
    connection: only on the connection with this index (0-based); None = the first one
        that reaches the trigger.
    """

    kind: FaultKind
    after_turn: int | None = None
    after_reply_chunks: int | None = None
    after_seconds: float | None = None
    turn: int | None = None
    connection: int | None = None
    code: int = CLOSE_INTERNAL_ERROR
    reason: str = REASON_INTERNAL
    time_left: float = 1.0
    fired: bool = False

    def __post_init__(self) -> None:
        triggers = [self.after_turn, self.after_reply_chunks, self.after_seconds]
        if sum(t is not None for t in triggers) != 1:
            raise ValueError("set exactly one of after_turn, after_reply_chunks, after_seconds")

    def matches_turn(self, connection: int, turn: int) -> bool:
        """Whether this fault fires when `turn` completes on `connection`."""
        return self._armed(connection) and self.after_turn == turn

    def matches_chunk(self, connection: int, turn: int, chunks: int) -> bool:
        """Whether this fault fires after chunk number `chunks` of turn `turn`'s reply."""
        wanted_turn = self.turn is None or self.turn == turn
        return self._armed(connection) and wanted_turn and self.after_reply_chunks == chunks

    def matches_timer(self, connection: int) -> bool:
        """Whether this fault runs on a timer on `connection`."""
        return self._armed(connection) and self.after_seconds is not None

    def _armed(self, connection: int) -> bool:
        return not self.fired and self.connection in (None, connection)
