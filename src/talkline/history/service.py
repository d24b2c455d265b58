"""The history as the app holds it: the store, the writer task, a recorder per session."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from talkline.history.recorder import SessionHistory
from talkline.history.store import HistoryStore
from talkline.history.writer import HistoryMetrics, HistoryWriter, WriterOptions


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

    def start(self) -> None:
        """Migrate and write in the background: a database that is down delays nothing."""
        self.writer.start()

    async def stop(self) -> None:
        await self.writer.stop()

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
