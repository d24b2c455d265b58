"""The Redis coordinator: one session cap across replicas, on leases that expire.

Each session holds a lease in Redis (``leases.py``). This replica renews all of its live
sessions' leases in one call every ``lease_renew`` seconds; a replica that dies stops
renewing, and its leases expire within ``lease_ttl`` seconds, which frees their slots.

When Redis cannot be reached, live sessions carry on (nothing in a running conversation
needs Redis), but new sessions are refused (``coordinator-unavailable``, close code 1013)
and ``/ready`` answers 503, so a proxy sends no one here. The renewal loop keeps trying,
every second while Redis is away; its first success re-adds the leases Redis lost, and
admission opens again. ``check`` (``/ready``, ``/connect``) only reads what the loop and
the last admission learnt: no Redis round trip per probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from loguru import logger
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from talkline.coordinator.leases import Lease, LeaseStore
from talkline.refusals import UNAVAILABLE, AdmissionRefused, Caps, Decision, Refusal

if TYPE_CHECKING:
    from talkline.admission import SessionRecord

RETRY_SECS = 1.0  # how often the loop tries again while Redis is away
CALL_TIMEOUT_SECS = 2.0  # a Redis call that takes longer counts as Redis being away
FAILURES = (RedisError, OSError, TimeoutError)
BY_LABEL = {refusal.label: refusal for refusal in Refusal}
T = TypeVar("T")


@dataclass(frozen=True)
class RedisOptions:
    url: str
    lease_ttl: float
    lease_renew: float


def connect(url: str) -> Redis:
    """A client that fails fast: admission answers at once rather than retrying for long."""
    return Redis.from_url(
        url,
        socket_timeout=CALL_TIMEOUT_SECS,
        socket_connect_timeout=CALL_TIMEOUT_SECS,
        retry=Retry(NoBackoff(), 0),
    )


async def bounded(call: Awaitable[T]) -> T:
    """``call``, or ``TimeoutError`` after ``CALL_TIMEOUT_SECS``."""
    return await asyncio.wait_for(call, CALL_TIMEOUT_SECS)


class RedisCoordinator:
    """Leases in Redis for this replica's sessions, renewed by one background task."""

    name = "redis"

    def __init__(self, caps: Caps, options: RedisOptions, replica: str):
        self.caps = caps
        self.options = options
        # One owner per process: workers that share a replica name still hold apart.
        self.owner = f"{replica}/{secrets.token_hex(3)}"
        self.held: dict[str, SessionRecord] = {}  # live here: renewed by the loop
        self.available = False  # the last call to Redis succeeded
        self.cluster_count = 0  # sessions counted cluster-wide, as of the last call
        self._client: Redis | None = None
        self._store: LeaseStore | None = None
        self._renewing: asyncio.Task[None] | None = None
        # A renewal runs apart from releases and detaches: one landing in Redis after a
        # release would put the freed lease back (or stretch a detached one's window).
        self._leases_changing = asyncio.Lock()

    @property
    def ttl_ms(self) -> int:
        return int(self.options.lease_ttl * 1000)

    def check(
        self, client: str | None, key_id: str | None, *, probe: bool = False
    ) -> Decision | None:
        """Unavailable while Redis is away; full (not for probes) as of the last count.

        A full cluster does not take this replica out of a proxy (``probe``): every replica
        would drop out at once, and clients would get the proxy's error page instead of a
        1013 with a reason. The per-address and per-key caps are checked on admission.
        """
        if not self.available:
            return UNAVAILABLE
        if not probe and self.cluster_count >= self.caps.total:
            return self.caps.decision(Refusal.FULL)
        return None

    def counted(self) -> int:
        return self.cluster_count

    def _lease(self, record: SessionRecord) -> Lease:
        return Lease(record.id, record.key_id or "", record.client)

    async def acquire(self, record: SessionRecord, *, takeover: bool = False) -> None:
        caps = (self.caps.total, self.caps.per_key, self.caps.per_client)
        try:
            label, count = await bounded(
                self.store.admit(self._lease(record), self.ttl_ms, caps, takeover=takeover)
            )
        except FAILURES as error:
            self._lost(error)
            raise AdmissionRefused(UNAVAILABLE) from None
        self._seen(count)
        if label != "ok":
            raise AdmissionRefused(self.caps.decision(BY_LABEL[label]))
        self.held[record.id] = record

    async def release(self, record: SessionRecord) -> None:
        """Free the lease now; if Redis is away it expires within the lease time instead."""
        if not self._let_go(record):
            return
        async with self._leases_changing:
            with contextlib.suppress(*FAILURES):
                _, count = await bounded(self.store.release(record.id))
                self._seen(count)

    async def detach(self, record: SessionRecord, window_secs: float) -> None:
        """Stop renewing; the lease expires ``window_secs`` from now in Redis time."""
        if not self._let_go(record):
            return
        async with self._leases_changing:
            with contextlib.suppress(*FAILURES):
                await bounded(self.store.detach(record.id, int(window_secs * 1000)))

    def _let_go(self, record: SessionRecord) -> bool:
        """Stop renewing ``record``; False if a newer record here took its lease over."""
        current = self.held.get(record.id)
        if current is not None and current is not record:
            return False
        self.held.pop(record.id, None)
        return True

    @property
    def store(self) -> LeaseStore:
        if self._store is None:
            raise RuntimeError("the Redis coordinator is not started")
        return self._store

    async def start(self) -> None:
        self._client = connect(self.options.url)
        self._store = LeaseStore(self._client, self.owner)
        await self.renew()
        if not self.available:
            logger.warning("session coordinator (Redis) unreachable at start: new sessions wait")
        self._renewing = asyncio.create_task(self._renew_forever(), name="lease-renewal")

    async def stop(self) -> None:
        if self._renewing is not None:
            self._renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewing
        if self._client is not None:
            await self._client.aclose()

    async def _renew_forever(self) -> None:
        while True:
            pause = self.options.lease_renew if self.available else RETRY_SECS
            await asyncio.sleep(pause)
            await self.renew()

    async def renew(self) -> None:
        """One call: extend every live lease here, re-adding any that Redis lost."""
        async with self._leases_changing:
            leases = [self._lease(record) for record in self.held.values()]
            try:
                count, readded = await bounded(self.store.renew(leases, self.ttl_ms))
            except FAILURES as error:
                self._lost(error)
                return
        if readded:
            logger.info(f"re-asserted {readded} session lease(s) in Redis")
        if not self.available:
            logger.info(f"session coordinator (Redis) reachable; {count} session(s) counted")
        self._seen(count)

    def _seen(self, count: int) -> None:
        self.available = True
        self.cluster_count = count

    def _lost(self, error: BaseException) -> None:
        if self.available:  # say it once per outage, without the URL (it may hold a password)
            logger.warning(f"session coordinator (Redis) unreachable: {type(error).__name__}")
        self.available = False
