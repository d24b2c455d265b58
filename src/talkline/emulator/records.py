"""What the emulator saw and did, kept for assertions and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import loopback

SECRET_HEADERS = frozenset({"x-goog-api-key", "authorization"})


@dataclass
class TurnRecord:
    """One user turn and the reply to it; times are `time.monotonic()` values."""

    number: int
    source: str
    user_audio_bytes: int
    ended_at: float
    first_audio_at: float | None = None
    completed_at: float | None = None
    interrupted: bool = False
    reply_chunks: int = 0


@dataclass
class ConnectionRecord:
    """One WebSocket connection: how it was opened, what arrived, how it ended."""

    index: int
    path: str
    api_version: str
    method: str
    key_source: str | None
    headers: dict[str, str]
    opened_at: float
    setup: dict[str, Any] | None = None
    model: str | None = None
    resumed_handle: str | None = None  # the handle setup carried, when it was accepted
    presented_handle: str | None = None  # the handle setup carried, accepted or not
    handle_refusal: str | None = None  # why the presented handle was refused
    conversation: int | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    audio_bytes: int = 0
    turns: list[TurnRecord] = field(default_factory=list)
    handles: list[str] = field(default_factory=list)
    sent_go_away: bool = False
    close_code: int | None = None
    close_reason: str | None = None
    closed_at: float | None = None


def safe_headers(headers: Any) -> dict[str, str]:
    """Request headers with credentials replaced by `<redacted>`."""
    return {
        name.lower(): "<redacted>" if name.lower() in SECRET_HEADERS else value
        for name, value in headers.raw_items()
    }


class Recorder(loopback.Recorder):
    """Holds connection records and wakes up anyone waiting for a condition on them."""

    def __init__(self) -> None:
        super().__init__()
        self.connections: list[ConnectionRecord] = []

    @property
    def audio_bytes(self) -> int:
        """User audio bytes received over every connection."""
        return sum(c.audio_bytes for c in self.connections)

    @property
    def turns(self) -> list[TurnRecord]:
        """Every user turn, in the order the connections were opened."""
        return [t for c in self.connections for t in c.turns]

    @property
    def completed_turns(self) -> int:
        """Number of replies that ended with turnComplete."""
        return sum(1 for t in self.turns if t.completed_at is not None)
