"""Resume on the same server: a dropped socket, then the conversation goes on where it was.

Real server, real Pipecat pipeline, the real google-genai SDK against the TLS emulator.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from talkline.audio import silence
from talkline.client import RTVIClient
from talkline.client_resume import resumable, resume_url
from talkline.emulator import GeminiEmulator
from talkline.history.service import RECALL_AFTER_SECS
from talkline.lifecycle import EndReason
from tests.history_support import wait_for_session
from tests.support import ServerThread, running_gemini_server, speak_until_turns

ANSWER_TIMEOUT = 30.0


@pytest.fixture
async def emulator() -> AsyncIterator[GeminiEmulator]:
    async with GeminiEmulator(reply_seconds=0.8, response_delay=0.1) as emu:
        yield emu


def bot_texts(client: RTVIClient) -> list[str]:
    return [e.data["text"] for e in client.of_type("bot-tts-text")]


async def wait_resumable(client: RTVIClient, after: int = 0) -> dict[str, Any]:
    """The ``session-resumable`` message sent after event ``after``."""
    await client.wait_until(
        lambda: any(
            e.type == "server-message" and e.data.get("type") == "session-resumable"
            for e in client.events[after:]
        ),
        timeout=20,
    )
    found = resumable(client)
    assert found is not None
    return found


async def talk_turns(client: RTVIClient, pcm: bytes, turns: int) -> None:
    for answered in range(1, turns + 1):
        await speak_until_turns(client, pcm + silence(0.6), answered)


def drop(client: RTVIClient) -> None:
    """The network goes away: no close frame, the server sees 1006."""
    client.connection.transport.abort()


async def resume(server: ServerThread, secret: str) -> RTVIClient:
    client = RTVIClient(await resume_url(server.http_url, secret))
    await client.connect()
    return client


async def test_dropped_socket_resumes_the_same_gemini_conversation(
    emulator: GeminiEmulator, weather_pcm: bytes, logged: list[str]
) -> None:
    """Two turns, the socket drops, resume: turn 3 is answered as turn 3 of the same
    Gemini conversation, whose new setup carried the newest handle. No secret is logged."""
    with running_gemini_server(emulator) as server:
        async with RTVIClient(server.ws_url) as first:
            ready = await first.client_ready()
            offer = await wait_resumable(first)
            await talk_turns(first, weather_pcm, 2)
            await asyncio.sleep(0.3)  # the last answer's handle reaches the registry
            drop(first)
        await emulator.wait_for(lambda: emulator.connections[0].closed_at is not None, 10)
        newest = emulator.connections[0].handles[-1]
        second = await resume(server, offer["resume"])
        try:
            resumed = await second.client_ready()
            again = await wait_resumable(second)
            await speak_until_turns(second, weather_pcm + silence(0.6), 1)
        finally:
            await second.close()

    assert offer["session_id"] == ready.data["about"]["session_id"]
    assert offer["window_secs"] == 60
    assert resumed.data["about"]["resumed"] is True
    assert resumed.data["about"]["session_id"] == offer["session_id"]
    assert resumed.data["about"]["replica"] == server.settings.replica
    assert again["resume"] != offer["resume"], "the secret rotates with each resume"
    assert bot_texts(first) == ["reply 1", "reply 2"]
    assert bot_texts(second) == ["reply 3"], "no repeated answer, no re-seeding"
    upstream = emulator.connections[-1]
    assert upstream.resumed_handle == newest
    assert upstream.conversation == emulator.connections[0].conversation
    assert not [m for m in upstream.messages if "client_content" in m], "not re-seeded"
    log = "\n".join(logged)
    assert offer["resume"] not in log and again["resume"] not in log
    assert offer["resume"].split(".")[1] not in log


async def test_resume_refusals_at_connect_and_at_the_socket(
    emulator: GeminiEmulator, weather_pcm: bytes
) -> None:
    """A wrong secret is 403; a token used once is 1008 the second time; a normal close
    (1000) ends the conversation at once: its secret then gets 410."""
    with running_gemini_server(emulator) as server:
        async with RTVIClient(server.ws_url) as first:
            await first.client_ready()
            offer = await wait_resumable(first)
            drop(first)
        session_id = offer["session_id"]
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            wrong = await http.post("/connect", json={"resume": f"{session_id}.not-the-secret"})
            url = await resume_url(server.http_url, offer["resume"])
            async with RTVIClient(url) as second:
                await second.client_ready()
                rotated = await wait_resumable(second)
                async with RTVIClient(url) as reused:
                    await reused.wait_for("closed", timeout=10)
            # second closed normally (1000) on leaving the block
            await asyncio.sleep(0.5)
            over = await http.post("/connect", json={"resume": rotated["resume"]})

    assert wrong.status_code == 403
    assert offer["resume"] not in wrong.text
    assert reused.close_code == 1008
    assert over.status_code == 410, over.text


async def test_a_dropped_session_holds_its_slot_until_the_window_ends(
    emulator: GeminiEmulator,
) -> None:
    """With one slot, a dropped conversation keeps it (the server is full) until its
    window is over; then the slot is free and the secret gets 410."""
    with running_gemini_server(emulator, max_sessions=1, resume_window=2) as server:
        async with RTVIClient(server.ws_url) as first:
            await first.client_ready()
            offer = await wait_resumable(first)
            drop(first)
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            await asyncio.sleep(0.5)
            during = await http.get("/ready")
            await asyncio.sleep(2.5)
            after = await http.get("/ready")
            over = await http.post("/connect", json={"resume": offer["resume"]})

    assert during.status_code == 503 and during.json()["refusal"] == "server-full"
    assert after.status_code == 200
    assert over.status_code == 410 and over.json()["refusal"] == "resume-window-over"


async def test_another_api_key_cannot_resume(emulator: GeminiEmulator) -> None:
    """With access on, the secret resumes only for the API key that started the session."""
    with running_gemini_server(emulator, api_keys="key-one,key-two") as server:
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            start = await http.post("/connect", headers={"Authorization": "Bearer key-one"})
            reply = start.json()
            async with RTVIClient(f"{reply['ws_url']}?token={reply['token']}") as first:
                await first.client_ready()
                offer = await wait_resumable(first)
                drop(first)
            body = {"resume": offer["resume"]}
            other = await http.post(
                "/connect", json=body, headers={"Authorization": "Bearer key-two"}
            )
            none = await http.post("/connect", json=body)
            mine = await http.post(
                "/connect", json=body, headers={"Authorization": "Bearer key-one"}
            )

    assert other.status_code == 403 and other.json()["refusal"] == "resume-forbidden"
    assert none.status_code == 401
    assert mine.status_code == 200 and set(mine.json()) == {"ws_url", "token"}


async def test_a_refused_handle_starts_fresh_seeded_with_the_transcript(
    weather_pcm: bytes,
) -> None:
    """Gemini no longer knows the handle (its lifetime is over): the resumed session starts
    a fresh upstream session seeded with the words so far, and says ``resumed: false``."""
    async with GeminiEmulator(reply_seconds=0.8, response_delay=0.1, handle_lifetime=1.0) as emu:
        with running_gemini_server(emu) as server:
            async with RTVIClient(server.ws_url) as first:
                await first.client_ready()
                offer = await wait_resumable(first)
                await talk_turns(first, weather_pcm, 2)
                await asyncio.sleep(0.3)
                drop(first)
            await asyncio.sleep(1.5)  # the handle expires
            second = await resume(server, offer["resume"])
            try:
                resumed = await second.client_ready()
                await speak_until_turns(second, weather_pcm + silence(0.6), 1)
            finally:
                await second.close()

    refused = [c for c in emu.connections if c.handle_refusal]
    assert refused and refused[0].handle_refusal == "handle expired"
    assert resumed.data["about"]["resumed"] is False
    seeds = [m for m in emu.connections[-1].messages if "client_content" in m]
    assert seeds, "the fresh session was not seeded"
    seeded = str(seeds[0])
    assert all(words in seeded for words in ("turn 1", "reply 1", "turn 2", "reply 2"))
    assert second.of_type("bot-stopped-speaking"), "the next turn is answered"


async def test_a_resume_does_not_restart_the_idle_timeout(emulator: GeminiEmulator) -> None:
    """Quiet for most of the idle timeout, dropped, resumed: the resumed session ends for
    idleness when the timeout counted from the last speech (here: the start) runs out, not a
    whole idle timeout after the resume."""
    idle = 4.0
    with running_gemini_server(emulator, idle_timeout=idle, resume_window=30) as server:
        async with RTVIClient(server.ws_url) as first:
            await first.client_ready()
            offer = await wait_resumable(first)
            await asyncio.sleep(idle - 1.0)
            drop(first)
        second = await resume(server, offer["resume"])
        await second.client_ready()
        await second.wait_for("closed", timeout=idle - 1.0)  # a full timeout would be 4 s

    ending = [e for e in second.of_type("server-message") if e.data["type"] == "session-ending"]
    assert ending and ending[0].data["reason"] == EndReason.IDLE_TIMEOUT.label


async def test_a_resumed_conversation_keeps_its_whole_history(
    emulator: GeminiEmulator, weather_pcm: bytes, tmp_path: Path
) -> None:
    """The history of a resumed conversation holds both connections' turns, in order, and
    none twice: the resumed connection writes after the first one's turns instead of over
    them, and its record keeps the conversation's start and counts the resume and all
    three answers."""
    with running_gemini_server(emulator, data_dir=tmp_path) as server:
        async with RTVIClient(server.ws_url) as first:
            await first.client_ready()
            offer = await wait_resumable(first)
            await talk_turns(first, weather_pcm, 2)
            await asyncio.sleep(0.3)  # the last answer's handle reaches the registry
            drop(first)
        await emulator.wait_for(lambda: emulator.connections[0].closed_at is not None, 10)
        second = await resume(server, offer["resume"])
        try:
            await second.client_ready()
            await speak_until_turns(second, weather_pcm + silence(0.6), 1)
            await asyncio.sleep(RECALL_AFTER_SECS + 0.5)  # the earlier record is read back
        finally:
            await second.close()
        record = await wait_for_session(server.http_url, offer["session_id"], turns=6)

    transcript = record["transcript"]
    assert [t["role"] for t in transcript] == ["user", "bot"] * 3
    assert [t["text"] for t in transcript if t["role"] == "bot"] == [
        "reply 1",
        "reply 2",
        "reply 3",
    ]
    assert record["resumes"] == 1 and record["turns"] == 3
    assert record["started_at"] <= transcript[0]["at"]
