"""One task that writes the history, so no session ever waits for the database.

Sessions hand rows to ``HistoryWriter`` without awaiting anything. Session snapshots are
coalesced (a newer one of the same session replaces the one waiting), turns queue in order;
together at most ``queue_size`` rows wait. The task writes them in batches, one transaction
each. While the database is slow or down, rows wait and the task retries with backoff;
when the queue is full, new rows are dropped, counted in ``/metrics`` and logged once per
outage. Expired rows are purged by the same task, now and then.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from loguru import logger
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from talkline.history.store import HistoryStore, lost_replicas

BATCH_ROWS = 500
LINGER_SECS = 0.2  # gather a few rows into one transaction
BACKOFF_SECS = (0.5, 1.0, 2.0, 4.0, 8.0)
PURGE_EVERY_SECS = 3600.0
STOP_FLUSH_SECS = 5.0


@dataclass(frozen=True)
class WriterOptions:
    replica: str
    queue_size: int = 10000
    retention_days: float = 30.0


class HistoryMetrics:
    """The writer's numbers, in the app's registry."""

    def __init__(self, registry: CollectorRegistry):
        self.dropped = Counter(
            "talkline_history_dropped", "History rows dropped: the queue was full.",
            registry=registry,
        )  # fmt: skip
        self.failures = Counter(
            "talkline_history_write_failures", "History batches the database refused.",
            registry=registry,
        )  # fmt: skip
        self.waiting = Gauge(
            "talkline_history_queue", "History rows waiting to be written.", registry=registry
        )


class HistoryWriter:
    """The bounded queue and the task that empties it into ``store``."""

    def __init__(self, store: HistoryStore, options: WriterOptions, metrics: HistoryMetrics):
        self.store = store
        self.options = options
        self.metrics = metrics
        self._sessions: dict[str, dict[str, Any]] = {}
        self._turns: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._outage = False  # logged once per outage, dropping too
        self._dropping = False
        self._writing = False  # a batch is on its way to the database
        self.ready = asyncio.Event()  # migrated and ready to be read
        self.metrics.waiting.set_function(self.waiting)

    def waiting(self) -> int:
        return len(self._sessions) + len(self._turns)

    # --- what sessions call (never awaits) -------------------------------------------------
    def put_session(self, row: dict[str, Any]) -> None:
        if row["id"] in self._sessions or self._room():  # a newer snapshot takes no room
            self._sessions[row["id"]] = row
        self._wake.set()

    def put_turn(self, row: dict[str, Any]) -> None:
        if self._room():
            self._turns.append(row)
        self._wake.set()

    def _room(self) -> bool:
        if self.waiting() < self.options.queue_size:
            return True
        self.metrics.dropped.inc()
        if not self._dropping:
            self._dropping = True
            logger.warning(
                f"history queue full ({self.options.queue_size} rows): dropping rows "
                "until the database catches up"
            )
        return False

    # --- the task --------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="history-writer")

    async def stop(self, timeout: float = STOP_FLUSH_SECS) -> None:
        """Write what waits (up to ``timeout`` seconds), then stop the task."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flushed(), timeout)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        await self.store.close()

    async def flushed(self) -> None:
        """Return once nothing waits (tests, shutdown)."""
        while self.waiting() or self._writing:
            await asyncio.sleep(0.05)

    async def _run(self) -> None:
        try:
            await self._serve()
        except Exception:  # a bug, or a schema newer than this talkline: say so, once
            logger.exception("history writer stopped: sessions go on, but are not recorded")
            raise

    async def _serve(self) -> None:
        await self._retry(self._prepare)
        self.ready.set()
        next_purge = time.monotonic()
        while True:
            if self.options.retention_days and time.monotonic() >= next_purge:
                await self._retry(self._purge)
                next_purge = time.monotonic() + PURGE_EVERY_SECS
            if not self.waiting():
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), PURGE_EVERY_SECS)
                await asyncio.sleep(LINGER_SECS)
            await self._write_batch()

    async def _prepare(self) -> None:
        await self.store.migrate()
        lost = lost_replicas(self.options.replica, await self.store.open_replicas())
        if marked := await self.store.mark_lost(lost):
            logger.warning(f"history: {marked} sessions never closed marked server-lost")

    async def _purge(self) -> None:
        if purged := await self.store.purge(self.options.retention_days):
            logger.info(f"history: purged {purged} sessions older than the retention")

    async def _write_batch(self) -> None:
        session_ids = list(self._sessions)[:BATCH_ROWS]
        session_rows = [self._sessions[i] for i in session_ids]
        turn_rows = list(self._turns)[: max(0, BATCH_ROWS - len(session_rows))]
        if not session_rows and not turn_rows:
            return
        self._writing = True
        try:
            written = await self._retry(lambda: self.store.write(session_rows, turn_rows))
        finally:
            self._writing = False
        for session_id, row in zip(session_ids, session_rows, strict=True):
            if self._sessions.get(session_id) is row:  # not replaced meanwhile
                del self._sessions[session_id]
        for _ in turn_rows:
            self._turns.popleft()
        if not written:
            self.metrics.dropped.inc(len(session_rows) + len(turn_rows))
        if not self.waiting():
            self._dropping = False

    async def _retry(self, work: Any) -> bool:
        """Run ``work`` until it succeeds (True) or the database refuses it for good (False)."""
        attempt = 0
        while True:
            try:
                await work()
            except (IntegrityError, DataError) as error:  # reached the database, and it said no
                self.metrics.failures.inc()
                logger.error(f"history: a batch was refused and dropped: {error.orig}")
                return False
            except (DBAPIError, OSError, TimeoutError) as error:
                self._down(error)
                await asyncio.sleep(BACKOFF_SECS[min(attempt, len(BACKOFF_SECS) - 1)])
                attempt += 1
                continue
            self._up()
            return True

    def _down(self, error: Exception) -> None:
        if not self._outage:
            self._outage = True
            reason = getattr(error, "orig", None) or error
            logger.warning(
                f"history database {self.store.where} unavailable ({type(reason).__name__}: "
                f"{str(reason)[:200]}); sessions carry on, rows wait in the queue"
            )

    def _up(self) -> None:
        if self._outage:
            self._outage = False
            logger.info(f"history database back: writing {self.waiting()} waiting rows")
