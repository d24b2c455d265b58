"""The local coordinator: sessions counted on this machine, with nothing else to run.

One process counts its own sessions. Worker processes beside each other (``--workers``)
also hold one flock'ed slot file each (``SlotPool``), so the total cap is global across
them; the per-address and per-key caps stay per process.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from talkline.refusals import AdmissionRefused, Caps, Decision, Refusal
from talkline.slots import SlotPool

if TYPE_CHECKING:
    from talkline.admission import SessionRecord


class LocalCoordinator:
    """Holds each counted session (live or detached) and, with ``slots``, a slot file."""

    name = "local"

    def __init__(self, caps: Caps, slots: SlotPool | None = None):
        self.caps = caps
        self.slots = slots
        self.held: dict[str, SessionRecord] = {}
        self._expiries: dict[str, asyncio.TimerHandle] = {}

    def check(
        self, client: str | None, key_id: str | None, *, probe: bool = False
    ) -> Decision | None:
        if len(self.held) >= self.caps.total or (self.slots is not None and self.slots.full()):
            return self.caps.decision(Refusal.FULL)
        return self._share_decision(client, key_id)

    def _share_decision(self, client: str | None, key_id: str | None) -> Decision | None:
        records = self.held.values()
        if client is not None and sum(r.client == client for r in records) >= self.caps.per_client:
            return self.caps.decision(Refusal.ADDRESS_FULL)
        if key_id is not None and sum(r.key_id == key_id for r in records) >= self.caps.per_key:
            return self.caps.decision(Refusal.KEY_FULL)
        return None

    def counted(self) -> int:
        return len(self.held)

    async def acquire(self, record: SessionRecord, *, takeover: bool = False) -> None:
        previous = self.held.get(record.id) if takeover else None
        if previous is not None:  # a resume: the new record takes the old one's place
            self._cancel_expiry(record.id)
            record.slot, previous.slot = previous.slot, None
            self.held[record.id] = record
            return
        if len(self.held) >= self.caps.total:
            raise AdmissionRefused(self.caps.decision(Refusal.FULL))
        if decision := self._share_decision(record.client, record.key_id):
            raise AdmissionRefused(decision)
        if self.slots is not None:  # the global cap: taking a slot is the check
            record.slot = self.slots.acquire()
            if record.slot is None:
                raise AdmissionRefused(self.caps.decision(Refusal.FULL))
        self.held[record.id] = record

    async def release(self, record: SessionRecord) -> None:
        self._free(record)

    async def detach(self, record: SessionRecord, window_secs: float) -> None:
        if self.held.get(record.id) is not record:
            return
        self._cancel_expiry(record.id)
        loop = asyncio.get_running_loop()
        self._expiries[record.id] = loop.call_later(window_secs, self._free, record)

    def _free(self, record: SessionRecord) -> None:
        if self.held.get(record.id) is record:  # not a record another one took over
            self._cancel_expiry(record.id)
            del self.held[record.id]
        if record.slot is not None and self.slots is not None:
            self.slots.release(record.slot)
        record.slot = None

    def _cancel_expiry(self, session_id: str) -> None:
        if timer := self._expiries.pop(session_id, None):
            timer.cancel()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for timer in self._expiries.values():
            timer.cancel()
        self._expiries.clear()
