"""Admission and bookkeeping for live sessions."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from talkline.slots import SlotPool

CLOSE_GRACE_SECS = 10.0  # after the drain deadline, for closing handshakes


@dataclass
class SessionRecord:
    """What the server knows about one live session."""

    id: str
    client: str
    started: float = field(default_factory=time.monotonic)
    end_reason: str = "client-disconnected"
    drain: Callable[[float], Awaitable[None]] | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    slot: int | None = None  # a global slot (file descriptor) when workers share the cap

    @property
    def duration(self) -> float:
        return time.monotonic() - self.started


class AdmissionRefused(Exception):
    """A session was not admitted; ``reason`` is what the client is told."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class SessionManager:
    """Admits at most ``max_sessions`` at once and keeps a record of each live one.

    With ``slots`` (several worker processes), the cap is global: every session also holds
    one of the pool's slots. The per-client cap stays per process.
    """

    def __init__(
        self, max_sessions: int, max_per_client: int | None = None, slots: SlotPool | None = None
    ):
        self.max_sessions = max_sessions
        self.max_per_client = max_per_client or max_sessions
        self.slots = slots
        self.live: dict[str, SessionRecord] = {}
        self.draining = False
        self.started_total = 0

    def refusal(self, client: str | None = None) -> str | None:
        """Why a new session (from ``client``, if given) would be refused now, or None."""
        if self.slots is not None and self.slots.full():
            return self._full()
        return self._local_refusal(client)

    def _local_refusal(self, client: str | None) -> str | None:
        if self.draining:
            return "server shutting down: try another server or again later"
        if len(self.live) >= self.max_sessions:
            return self._full()
        mine = sum(1 for record in self.live.values() if record.client == client)
        if client is not None and mine >= self.max_per_client:
            return f"too many sessions from your address ({self.max_per_client} at most)"
        return None

    def _full(self) -> str:
        return f"server full: all {self.max_sessions} session slots are in use, try again later"

    def admit(self, client: str) -> SessionRecord:
        if reason := self._local_refusal(client):
            raise AdmissionRefused(reason)
        slot = None
        if self.slots is not None:  # the global cap: taking a slot is the check
            slot = self.slots.acquire()
            if slot is None:
                raise AdmissionRefused(self._full())
        record = SessionRecord(id=uuid.uuid4().hex[:12], client=client, slot=slot)
        self.live[record.id] = record
        self.started_total += 1
        return record

    def release(self, record: SessionRecord) -> None:
        self.live.pop(record.id, None)
        if record.slot is not None and self.slots is not None:
            self.slots.release(record.slot)
            record.slot = None
        record.finished.set()

    async def drain(self, timeout: float) -> None:
        """Stop admitting; let live sessions finish their turn, up to ``timeout`` seconds."""
        self.draining = True
        records = list(self.live.values())
        deadline = asyncio.get_running_loop().time() + timeout
        drains = [self._drain_one(record, deadline) for record in records]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*drains), timeout + CLOSE_GRACE_SECS)

    @staticmethod
    async def _drain_one(record: SessionRecord, deadline: float) -> None:
        if record.drain is not None:
            await record.drain(deadline)
        await record.finished.wait()

    def __len__(self) -> int:
        return len(self.live)
