"""The history database goes away for 30 s during live conversations: they carry on, rows
wait in the queue, and every row is written once the database is back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from talkline.audio import peak
from talkline.client import RTVIClient
from tests.history_support import wait_for_session
from tests.postgres import PostgresServer, running_postgres
from tests.support import ServerThread, running_server, speak_and_wait_for_answer, words

OUTAGE_SECS = 30.0
CONVERSATIONS = 5


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


async def keep_talking(client: RTVIClient, until: float) -> None:
    """Silence from the microphone, as a client that stays on the line."""
    while time.monotonic() < until and not client.closed:
        await client.silence(0.256)


def waiting_rows(server: ServerThread) -> int:
    history = server.state.history
    assert history is not None
    return history.writer.waiting()


def metric(server: ServerThread, name: str) -> float:
    value = server.state.metrics.registry.get_sample_value(name)
    return float(value or 0.0)


async def test_postgresql_down_for_30_s_during_five_conversations(
    postgres: PostgresServer, weather_pcm: bytes, logged: list[str]
) -> None:
    """Five sessions talk while PostgreSQL is stopped: each is answered, none ends, rows
    wait; after PostgreSQL returns every session and turn is there."""
    with running_server(database_url=postgres.url, replica="outage") as server:
        httpx.get(f"{server.http_url}/sessions", timeout=30).raise_for_status()
        clients = [RTVIClient(server.ws_url) for _ in range(CONVERSATIONS)]
        for client in clients:
            await client.connect()
        readies = await asyncio.gather(*(client.client_ready() for client in clients))
        ids = [ready.data["about"]["session_id"] for ready in readies]

        postgres.stop()
        back_at = time.monotonic() + OUTAGE_SECS
        await asyncio.gather(*(speak_and_wait_for_answer(c, weather_pcm) for c in clients))
        await asyncio.gather(*(keep_talking(c, back_at) for c in clients))
        assert not any(client.closed for client in clients)
        assert waiting_rows(server) >= CONVERSATIONS  # at least each session's row waits
        postgres.start()

        for client in clients:
            await client.close()
        records = [await wait_for_session(server.http_url, i, turns=2) for i in ids]
        dropped = metric(server, "talkline_history_dropped_total")

    for client, record in zip(clients, records, strict=True):
        assert not client.of_type("error") and peak(bytes(client.bot_audio)) > 1000
        # Under load an answer's audio may pause and count as two bot turns: both are kept.
        assert record["end_reason"] == "client-disconnected" and record["turns"] >= 1
        said = {role: " ".join(t["text"] for t in record["transcript"] if t["role"] == role)
                for role in ("user", "bot")}  # fmt: skip
        assert "weather" in words(said["user"]) and "You said" in said["bot"]
    assert dropped == 0
    assert any("history database" in line and "unavailable" in line for line in logged)
    assert not any(postgres.password in line for line in logged)  # the URL's password
