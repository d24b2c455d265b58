"""The history as the app holds it: the store, the writer task, a recorder per session."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from loguru import logger
from prometheus_client import CollectorRegistry

from talkline.history.recorder import SessionHistory
from talkline.history.store import HistoryStore
from talkline.history.writer import HistoryMetrics, HistoryWriter, WriterOptions

RECALL_AFTER_SECS = 1.0  # the previous connection's last rows land first (writer: 0.2 s)
RECALL_TRIES_SECS = (RECALL_AFTER_SECS, 2.0, 4.0, 8.0, 16.0, 32.0)  # waits before each read
RECALL_TIMEOUT_SECS = 10.0


@dataclass(frozen=True)
class HistoryOptions:
    url: str  # may hold a password: never printed
    replica: str
    transcripts: bool = True
    retention_days: float = 30.0
    queue_size: int = 10000


class History:
    """The app's history: a store, its writer, and a recorder for each session."""

    def __init__(self, options: HistoryOptions, registry: CollectorRegistry):
        self.options = options
        self.store = HistoryStore(options.url)
        writer_options = WriterOptions(
            replica=options.replica,
            queue_size=options.queue_size,
            retention_days=options.retention_days,
        )
        self.writer = HistoryWriter(self.store, writer_options, HistoryMetrics(registry))
        self._recalls: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Migrate and write in the background: a database that is down delays nothing."""
        self.writer.start()

    async def stop(self) -> None:
        recalls = list(self._recalls)
        for task in recalls:
            task.cancel()  # each writes the row it held (see _recall), then the writer flushes
        await asyncio.gather(*recalls, return_exceptions=True)
        await self.writer.stop()

    def resumed(self, history: SessionHistory, epoch: int, started: float) -> None:
        """``history`` records connection ``epoch`` of a resumed conversation begun at
        ``started``: it goes on from the earlier connections' turns, and, once their last
        rows have landed, counts what they recorded (read back in the background, so a
        database that is slow or down delays no audio; retried for about a minute). Its
        row is written once that is done."""
        history.continues(epoch, started)
        task = asyncio.create_task(self._recall(history), name=f"recall-{history.session_id}")
        self._recalls.add(task)
        task.add_done_callback(self._recalls.discard)

    async def _recall(self, history: SessionHistory) -> None:
        problem = "no answer"
        try:
            for delay in RECALL_TRIES_SECS:
                await asyncio.sleep(delay)
                try:
                    async with asyncio.timeout(RECALL_TIMEOUT_SECS):
                        found = await self.store.get_session(history.session_id)
                except Exception as error:  # its type only: a database URL may hold a password
                    problem = type(error).__name__
                    continue
                if found is None:
                    history.recalled_nothing()
                else:
                    history.recall(*found)
                return
            logger.warning(
                f"history: could not read back resumed session {history.session_id} "
                f"({problem}); its record counts this connection's answers only"
            )
            history.recalled_nothing()
        except asyncio.CancelledError:  # the server stops: the row it holds is still written
            history.recalled_nothing()
            raise

    def recorder(
        self, session_id: str, client: str, about: Mapping[str, str], api_key_id: str | None
    ) -> SessionHistory:
        identity = {
            "id": session_id,
            "replica": self.options.replica,
            "client": client,
            "brain": about.get("brain", "unknown"),
            "about": dict(about),
            "api_key_id": api_key_id,
        }
        return SessionHistory(self.writer, identity, transcripts=self.options.transcripts)
