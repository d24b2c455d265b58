"""Resume on the same server: a dropped socket, then the conversation goes on where it was.

Real server, real Pipecat pipeline, the real google-genai SDK against the TLS emulator.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from talkline.audio import silence
from talkline.client import RTVIClient, resumable, resume_url
from talkline.emulator import GeminiEmulator
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
    emulator: GeminiEmulator, weather_pcm: bytes
) -> None:
    """Two turns, the socket drops, resume: turn 3 is answered as turn 3 of the same
    Gemini conversation, whose new setup carried the newest handle."""
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
