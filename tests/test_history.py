"""Session history end to end over real sockets: spoken sessions land in SQLite, readable
through /sessions."""

from __future__ import annotations

from pathlib import Path

import httpx

from talkline.client import RTVIClient
from tests.history_support import wait_for_session
from tests.postgres import running_postgres
from tests.support import running_server, speak_and_wait_for_answer, words


async def test_spoken_conversation_is_recorded_with_words_latency_and_end_reason(
    tmp_path: Path, weather_pcm: bytes
) -> None:
    """A conversation on /ws shows up in /sessions with its transcript, latency and reason."""
    with running_server(data_dir=tmp_path, replica="replica-a") as server:
        async with RTVIClient(server.ws_url) as client:
            ready = await client.client_ready()
            session_id = ready.data["about"]["session_id"]
            live = await wait_for_session(server.http_url, session_id, ended=False)
            await speak_and_wait_for_answer(client, weather_pcm)
        record = await wait_for_session(server.http_url, session_id, turns=2)
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            listing = (await http.get("/sessions")).json()

    assert (tmp_path / "history.db").is_file()
    assert live["end_reason"] is None and live["transcript"] == []  # written at its start
    assert record["end_reason"] == "client-disconnected"
    assert record["replica"] == "replica-a" and record["brain"] == "local"
    assert (
        record["about"]["stt"] == server.settings.effective_stt and record["client"] == "127.0.0.1"
    )
    assert record["api_key_id"] is None
    assert record["turns"] >= 1 and record["duration_secs"] > 0
    assert record["latency_p50_ms"] is not None and record["latency_p50_ms"] > 0
    user, bot = record["transcript"][:2]
    assert user["role"] == "user" and {"weather", "today"} <= words(user["text"])
    assert bot["role"] == "bot" and "You said" in bot["text"] and "weather" in bot["text"]
    assert bot["latency_ms"] == record["latency_p50_ms"] and not bot["interrupted"]
    assert listing["sessions"][0]["id"] == session_id and listing["total"] == 1


async def test_on_postgresql_an_authenticated_conversation_names_its_key_id(
    weather_pcm: bytes,
) -> None:
    """Through PostgreSQL, with access on: the record has the key's id, never the key."""
    key = "hk-pg-5e1b7c"
    with (
        running_postgres() as postgres,
        running_server(
            database_url=postgres.url, api_keys=f"first,{key}", token_secret="sig"
        ) as server,
    ):
        auth = {"Authorization": f"Bearer {key}"}
        token = httpx.post(f"{server.http_url}/connect", headers=auth).json()["token"]
        async with RTVIClient(f"{server.ws_url}?token={token}") as client:
            session_id = (await client.client_ready()).data["about"]["session_id"]
            await speak_and_wait_for_answer(client, weather_pcm)
        record = await wait_for_session(server.http_url, session_id, turns=2, headers=auth)

    assert record["api_key_id"] == "key-1" and key not in str(record)
    assert record["end_reason"] == "client-disconnected" and record["latency_p50_ms"] > 0
    assert "weather" in words(record["transcript"][0]["text"])
