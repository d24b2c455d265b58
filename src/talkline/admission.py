"""Admission: one decision for every door (``/ready``, ``/connect``, ``/ws``) and the live sessions.

A new session is refused while the server starts, after it failed to start, while it drains,
when every session slot is taken, or when the client's address holds its share. Each door asks
the same ``Admission.decide`` and answers with what the decision carries: the WebSocket close
code, the HTTP status and the reason the client is told.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from starlette import status

from talkline.lifecycle import EndReason, SessionState
from talkline.slots import SlotPool

CLOSE_GRACE_SECS = 10.0  # after the drain deadline, for closing handshakes


class Refusal(Enum):
    """Why a session is not admitted: its label, WebSocket close code and HTTP status."""

    STARTING = ("server-starting", status.WS_1013_TRY_AGAIN_LATER, 503)
    START_FAILED = ("start-failed", status.WS_1011_INTERNAL_ERROR, 503)
    SHUTTING_DOWN = ("server-shutting-down", status.WS_1013_TRY_AGAIN_LATER, 503)
    FULL = ("server-full", status.WS_1013_TRY_AGAIN_LATER, 503)
    ADDRESS_FULL = ("address-full", status.WS_1013_TRY_AGAIN_LATER, 429)

    def __init__(self, label: str, ws_code: int, http_status: int):
        self.label = label
        self.ws_code = ws_code
        self.http_status = http_status


@dataclass(frozen=True)
class Decision:
    """A refusal with the words the client is told."""

    refusal: Refusal
    reason: str

    @property
    def ws_code(self) -> int:
        return self.refusal.ws_code

    @property
    def http_status(self) -> int:
        return self.refusal.http_status


class AdmissionRefused(Exception):
    """A session was not admitted; ``decision`` says why and with which codes."""

    def __init__(self, decision: Decision):
        super().__init__(decision.reason)
        self.decision = decision


class Readiness(Protocol):
    """What admission needs to know of the shared resources' start-up."""

    @property
    def is_ready(self) -> bool: ...

    @property
    def failure(self) -> str | None: ...


@dataclass
class SessionRecord:
    """What the server knows about one live session."""

    id: str
    client: str
    started: float = field(default_factory=time.monotonic)
    state: SessionState = SessionState.AWAITING_CLIENT_READY
    end_reason: EndReason = EndReason.CLIENT_DISCONNECTED
    drain: Callable[[float], Awaitable[None]] | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    slot: int | None = None  # a global slot (file descriptor) when workers share the cap
    key_id: str | None = None
    fence: Callable[[], None] | None = None  # close this session: resumed on another socket
    detached: asyncio.TimerHandle | None = None  # resumable after an unexpected close

    @property
    def duration(self) -> float:
        return time.monotonic() - self.started


class Admission:
    """Admits at most ``max_sessions`` at once and keeps a record of each live one.

    With ``slots`` (several worker processes), the cap is global: every session also holds
    one of the pool's slots. The per-client cap stays per process.
    """

    def __init__(
        self,
        readiness: Readiness,
        max_sessions: int,
        max_per_client: int | None = None,
        slots: SlotPool | None = None,
    ):
        self.readiness = readiness
        self.max_sessions = max_sessions
        self.max_per_client = max_per_client or max_sessions
        self.slots = slots
        self.live: dict[str, SessionRecord] = {}
        self.draining = False
        self.started_total = 0

    def decide(self, client: str | None = None) -> Decision | None:
        """Why a new session (from ``client``, if given) would be refused now, or None."""
        if decision := self._local_decision(client):
            return decision
        if self.slots is not None and self.slots.full():
            return self._full()
        return None

    def _local_decision(self, client: str | None) -> Decision | None:
        if failure := self.readiness.failure:
            return Decision(Refusal.START_FAILED, f"server failed to start: {failure}")
        if not self.readiness.is_ready:
            return Decision(Refusal.STARTING, "server starting: try again soon")
        if self.draining:
            return Decision(
                Refusal.SHUTTING_DOWN, "server shutting down: try another server or again later"
            )
        if len(self.live) >= self.max_sessions:
            return self._full()
        mine = sum(1 for record in self.live.values() if record.client == client)
        if client is not None and mine >= self.max_per_client:
            return Decision(
                Refusal.ADDRESS_FULL,
                f"too many sessions from your address ({self.max_per_client} at most)",
            )
        return None

    def _full(self) -> Decision:
        return Decision(
            Refusal.FULL,
            f"server full: all {self.max_sessions} session slots are in use, try again later",
        )

    def admit(
        self, client: str, key_id: str | None = None, session_id: str | None = None
    ) -> SessionRecord:
        """A record for a new session from ``client``; raises ``AdmissionRefused``.

        With ``session_id`` (a resume) a detached session of that id held here is taken
        over: its slot passes to the new record and is not counted again."""
        if session_id is not None and (old := self.live.get(session_id)) is not None:
            return self._take_over(old, client, key_id)
        if decision := self._local_decision(client):
            raise AdmissionRefused(decision)
        slot = None
        if self.slots is not None:  # the global cap: taking a slot is the check
            slot = self.slots.acquire()
            if slot is None:
                raise AdmissionRefused(self._full())
        record_id = session_id or uuid.uuid4().hex[:12]
        record = SessionRecord(id=record_id, client=client, slot=slot, key_id=key_id)
        self.live[record.id] = record
        self.started_total += 1
        return record

    def _take_over(self, old: SessionRecord, client: str, key_id: str | None) -> SessionRecord:
        if old.detached is not None:
            old.detached.cancel()
        record = SessionRecord(id=old.id, client=client, slot=old.slot, key_id=key_id)
        old.slot = None
        self.live[record.id] = record
        return record

    def detach(self, record: SessionRecord, window_secs: float) -> None:
        """An unexpected close: the slot stays counted until the resume window ends."""
        record.state = SessionState.CLOSED
        record.finished.set()
        if self.live.get(record.id) is not record:  # already taken over
            return
        loop = asyncio.get_running_loop()
        record.detached = loop.call_later(window_secs, self._expire, record)

    def _expire(self, record: SessionRecord) -> None:
        if self.live.get(record.id) is record:
            self.release(record)

    def release(self, record: SessionRecord) -> None:
        if self.live.get(record.id) is record:
            del self.live[record.id]
        if record.slot is not None and self.slots is not None:
            self.slots.release(record.slot)
            record.slot = None
        record.state = SessionState.CLOSED
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
