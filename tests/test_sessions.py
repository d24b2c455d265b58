"""Admission, timeouts and component faults, over real sockets."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from talkline.audio import peak, piper_speech
from talkline.client import RTVIClient
from talkline.lifecycle import EndReason
from talkline.session import END_GRACE_SECS
from tests.support import ServerThread, final_transcript, running_server


@pytest.fixture(scope="module")
def small_server_running():
    with running_server(max_sessions=1, session_timeout=4.0, idle_timeout=2.0) as server:
        yield server


@pytest.fixture
async def small_server(small_server_running: ServerThread) -> ServerThread:
    """A server with room for one session that ends sessions quickly, with none live."""
    async with asyncio.timeout(10):
        while len(small_server_running.state.admission):
            await asyncio.sleep(0.05)
    return small_server_running


async def test_one_session_over_the_cap_is_refused_with_1013(small_server: ServerThread) -> None:
    """With max_sessions=1 a second connection is closed 1013 and the first is undisturbed."""
    async with RTVIClient(small_server.ws_url) as first:
        await first.client_ready()
        async with RTVIClient(small_server.ws_url) as second:
            await second.wait_for("closed", timeout=10)
        assert second.close_code == 1013
        assert "server full" in second.close_reason
        assert httpx.get(f"{small_server.http_url}/ready").status_code == 503
        connect = httpx.post(f"{small_server.http_url}/connect", json={})
        assert connect.status_code == 503 and "server full" in connect.json()["error"]
        await first.send_message({"label": "rtvi-ai", "type": "client-message", "id": "x",
                                  "data": {"t": "ping", "d": {}}})  # fmt: skip
        await asyncio.sleep(0.3)
        assert not first.closed


async def test_idle_session_is_told_and_closed_cleanly(small_server: ServerThread) -> None:
    """Nobody speaks for idle_timeout seconds: a server-message says why, then close 1000."""
    async with RTVIClient(small_server.ws_url) as client:
        await client.client_ready()
        await client.wait_for("closed", timeout=15)
    ending = [e for e in client.of_type("server-message") if e.data["type"] == "session-ending"]
    assert ending and ending[0].data["reason"] == EndReason.IDLE_TIMEOUT.label
    assert client.close_code == 1000
    assert client.close_reason.startswith(EndReason.IDLE_TIMEOUT.label)


async def test_session_timeout_is_told_and_closed_cleanly(
    small_server: ServerThread, weather_pcm: bytes
) -> None:
    """A session that keeps talking still ends at session_timeout (not idle_timeout)."""
    settings = small_server.settings
    assert settings.session_timeout >= 2 * settings.idle_timeout  # two timers told apart
    connecting = time.monotonic()  # the session's timer starts after this
    async with RTVIClient(small_server.ws_url) as client:
        await client.client_ready()
        with pytest.raises(ConnectionClosed):  # the server closes under the stream
            for _ in range(10):
                await client.stream(weather_pcm)
        closed = await client.wait_for("closed", timeout=15)
    reasons = [e.data.get("reason") for e in client.of_type("server-message")]
    assert EndReason.SESSION_TIMEOUT.label in reasons
    assert client.close_code == 1000
    lasted = closed.at - connecting
    assert settings.session_timeout <= lasted < settings.session_timeout + END_GRACE_SECS + 3


async def test_next_turn_is_answered_after_piper_dies_mid_answer(
    tmp_path: Path, dragon_pcm: bytes
) -> None:
    """Piper's process dies while the bot speaks; it is restarted and the next turn answered."""
    three = piper_speech(
        "The sky is blue. The grass is green. The sun is warm.", save=tmp_path / "t.wav"
    )
    with running_server() as server:
        piper = server.shared.piper
        assert piper is not None
        async with RTVIClient(server.ws_url) as client:
            await client.client_ready()
            await client.stream(three)
            while not client.turns:  # the first audio of a three-sentence answer
                await client.silence(0.032)
            first_pid = piper.pid
            assert first_pid is not None
            os.kill(first_pid, signal.SIGKILL)
            async with asyncio.timeout(60):
                while piper.pid == first_pid or not await piper.healthy():
                    await asyncio.sleep(0.1)
            await speak_and_wait_for_answer_again(client, dragon_pcm, "dragon")
        assert piper.restarts == 1
        assert "dragon" in final_transcript(client).lower()
        assert client.turns[-1].ended and peak(bytes(client.turns[-1].audio)) > 1000


async def speak_and_wait_for_answer_again(client: RTVIClient, pcm: bytes, word: str) -> None:
    """Speak ``pcm`` and wait until its transcript (with ``word``) is answered with audio."""
    await client.stream(pcm)
    async with asyncio.timeout(60):
        while True:
            heard = [e for e in client.of_type("user-transcription") if word in e.data["text"]]
            answers = [t for t in client.turns if heard and t.first_audio_at > heard[-1].at]
            if answers and answers[0].ended:
                return
            await client.silence(0.256)
