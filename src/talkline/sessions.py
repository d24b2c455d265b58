"""Admission and bookkeeping for live sessions."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field


@dataclass
class SessionRecord:
    """What the server knows about one live session."""

    id: str
    client: str
    started: float = field(default_factory=time.monotonic)
    end_reason: str = "client-disconnected"

    @property
    def duration(self) -> float:
        return time.monotonic() - self.started


class AdmissionRefused(Exception):
    """A session was not admitted; ``reason`` is what the client is told."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class SessionManager:
    """Admits at most ``max_sessions`` at once and keeps a record of each live one."""

    def __init__(self, max_sessions: int):
        self.max_sessions = max_sessions
        self.live: dict[str, SessionRecord] = {}
        self.draining = False
        self.started_total = 0

    def refusal(self) -> str | None:
        """Why a new session would be refused now, or None."""
        if self.draining:
            return "server shutting down: try another server or again later"
        if len(self.live) >= self.max_sessions:
            return f"server full: all {self.max_sessions} session slots are in use, try again later"
        return None

    def admit(self, client: str) -> SessionRecord:
        reason = self.refusal()
        if reason:
            raise AdmissionRefused(reason)
        record = SessionRecord(id=uuid.uuid4().hex[:12], client=client)
        self.live[record.id] = record
        self.started_total += 1
        return record

    def release(self, record: SessionRecord) -> None:
        self.live.pop(record.id, None)

    def __len__(self) -> int:
        return len(self.live)
