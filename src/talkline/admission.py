"""Admission: one decision for every door (``/ready``, ``/connect``, ``/ws``) and the live sessions.

A new session is refused while the server starts, after it failed to start, while it drains,
or when its coordinator says a cap is reached: every session slot taken, or the client's
address or API key holding its share (``talkline.coordinator``: on this machine, or across
replicas on Redis). Each door asks the same ``Admission.decide`` and answers with what the
decision carries: the WebSocket close code, the HTTP status and the reason the client is told.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from talkline.coordinator import Coordinator
from talkline.coordinator.local import LocalCoordinator
from talkline.lifecycle import EndReason, SessionState
from talkline.refusals import AdmissionRefused, Caps, Decision, Refusal
from talkline.slots import SlotPool

__all__ = ["Admission", "AdmissionRefused", "Decision", "Refusal", "SessionRecord"]

CLOSE_GRACE_SECS = 10.0  # after the drain deadline, for closing handshakes


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
    key_id: str | None = None  # the API key's id when access control is on
    started: float = field(default_factory=time.monotonic)
    state: SessionState = SessionState.AWAITING_CLIENT_READY
    end_reason: EndReason = EndReason.CLIENT_DISCONNECTED
    drain: Callable[[float], Awaitable[None]] | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    slot: int | None = None  # a global slot (file descriptor) when workers share the cap
    fence: Callable[[], None] | None = None  # close this session: resumed on another socket

    @property
    def duration(self) -> float:
        return time.monotonic() - self.started


class Admission:
    """Admits sessions within the caps its coordinator counts, and keeps each live one.

    Without a ``coordinator``, sessions are counted in this process (``max_sessions``, at
    most ``max_per_client`` per address), or with ``slots`` in files that sibling worker
    processes share, so the total cap is global.
    """

    def __init__(
        self,
        readiness: Readiness,
        max_sessions: int,
        max_per_client: int | None = None,
        slots: SlotPool | None = None,
        *,
        coordinator: Coordinator | None = None,
    ):
        self.readiness = readiness
        caps = Caps(max_sessions, max_per_client or max_sessions, max_sessions)
        self.coordinator = coordinator or LocalCoordinator(caps, slots)
        self.live: dict[str, SessionRecord] = {}
        self.draining = False
        self.started_total = 0

    @property
    def max_sessions(self) -> int:
        return self.coordinator.caps.total

    def decide(
        self, client: str | None = None, key_id: str | None = None, *, probe: bool = False
    ) -> Decision | None:
        """Why a new session (from ``client`` with ``key_id``, if given) would be refused
        now, or None. ``probe`` (``/ready``) asks whether this server can take sessions at
        all: with the Redis coordinator a full cluster is not a reason to leave the proxy."""
        if decision := self._server_decision():
            return decision
        return self.coordinator.check(client, key_id, probe=probe)

    def _server_decision(self) -> Decision | None:
        if failure := self.readiness.failure:
            return Decision(Refusal.START_FAILED, f"server failed to start: {failure}")
        if not self.readiness.is_ready:
            return Decision(Refusal.STARTING, "server starting: try again soon")
        if self.draining:
            return Decision(
                Refusal.SHUTTING_DOWN, "server shutting down: try another server or again later"
            )
        return None

    async def admit(
        self, client: str, key_id: str | None = None, session_id: str | None = None
    ) -> SessionRecord:
        """A record for a session from ``client`` (with API key id ``key_id``); raises
        ``AdmissionRefused``.

        With ``session_id`` (a resume), the lease that id still holds (live elsewhere, or
        detached and within its window) is taken over: it is not counted as a new session
        and no cap refuses it. If that lease is gone, the session counts as a new one under
        the caps, with the same id.
        """
        if decision := self._server_decision():
            raise AdmissionRefused(decision)
        record = SessionRecord(id=session_id or uuid.uuid4().hex[:12], client=client)
        record.key_id = key_id
        await self.coordinator.acquire(record, takeover=session_id is not None)
        self.live[record.id] = record
        if session_id is None:
            self.started_total += 1
        return record

    async def release(self, record: SessionRecord) -> None:
        """The session is over (a normal close, or one that cannot resume): free its lease
        now. Releasing twice, or a record another one took over, is harmless."""
        self._forget(record)
        try:
            await self.coordinator.release(record)
        finally:  # only now: a shutdown waiting for it then finds the lease freed
            self._closed(record)

    async def detach(self, record: SessionRecord, window_secs: float) -> None:
        """The socket went away unexpectedly but the conversation may resume: the session
        stays counted for ``window_secs`` (locally a timer; on Redis the lease expires at
        Redis' now + ``window_secs`` and is no longer renewed), then its lease is freed.
        ``admit(..., session_id=record.id)`` within the window takes the lease over."""
        self._forget(record)
        try:
            await self.coordinator.detach(record, window_secs)
        finally:
            self._closed(record)

    def _forget(self, record: SessionRecord) -> None:
        if self.live.get(record.id) is record:
            del self.live[record.id]

    @staticmethod
    def _closed(record: SessionRecord) -> None:
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
