"""Where sessions are counted: on this machine (``local``) or across replicas (``redis``).

``TALKLINE_REDIS_URL`` chooses. Unset, the ``LocalCoordinator`` counts sessions in this
process, or in the flock'ed slot files its sibling workers share (``slots.py``): nothing to
run. Set, the ``RedisCoordinator`` holds one lease per session in Redis, so every replica
behind a proxy shares one cap; a dead replica's leases expire on their own.

``Admission`` asks its coordinator; the coordinator only counts. Both backends answer with
the same ``Decision``s (``refusals.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from talkline.refusals import Caps, Decision

if TYPE_CHECKING:
    from talkline.admission import SessionRecord


class Coordinator(Protocol):
    """Counts sessions against the caps; see ``Admission`` for what each call means."""

    name: str
    caps: Caps

    def check(self, client: str | None, key_id: str | None, *, probe: bool) -> Decision | None:
        """A refusal a new session would get now, from state at hand (no network call)."""
        ...

    def counted(self) -> int:
        """Sessions counted against the cap, as last known (all replicas for ``redis``)."""
        ...

    async def acquire(self, record: SessionRecord, *, takeover: bool) -> None: ...

    async def release(self, record: SessionRecord) -> None: ...

    async def detach(self, record: SessionRecord, window_secs: float) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True)
class CoordinatorOptions:
    """What a coordinator is built from (``Settings.options`` fills it)."""

    max_sessions: int
    max_sessions_per_client: int
    max_sessions_per_key: int | None
    redis_url: str | None
    lease_ttl: float
    lease_renew: float
    replica: str
    slots_dir: Path | None

    @property
    def caps(self) -> Caps:
        per_key = self.max_sessions_per_key or self.max_sessions
        return Caps(self.max_sessions, self.max_sessions_per_client, per_key)


def build_coordinator(options: CoordinatorOptions) -> Coordinator:
    """The Redis coordinator when a URL is set, else the local one."""
    if options.redis_url:
        from talkline.coordinator.redis_cap import RedisCoordinator, RedisOptions

        return RedisCoordinator(
            options.caps,
            RedisOptions(options.redis_url, options.lease_ttl, options.lease_renew),
            options.replica,
        )
    from talkline.coordinator.local import LocalCoordinator
    from talkline.slots import SlotPool

    slots = SlotPool(options.slots_dir, options.max_sessions) if options.slots_dir else None
    return LocalCoordinator(options.caps, slots)
