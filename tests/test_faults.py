"""Component faults: the recognizer raising, the LLM down or slow, a client that stops reading."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from talkline.audio import peak
from talkline.client import RTVIClient
from talkline.lifecycle import EndReason
from talkline.services.openai_llm import APOLOGY
from talkline.transport import SessionSocket, SocketState
from tests.fakes import OpenAIFake
from tests.support import (
    ServerThread,
    bot_text,
    final_transcript,
    running_server,
    speak_and_wait_for_answer,
    words,
)


async def test_recognizer_failure_is_an_error_and_the_session_goes_on(
    server: ServerThread, weather_pcm: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Moonshine raises while the user says one utterance (the early transcript's run and
    the stop's): an error event, and the next turn is answered."""
    moonshine = server.shared.moonshine
    assert moonshine is not None
    real = moonshine.transcribe
    broken = True

    def failing_while_broken(pcm: bytes, sample_rate: int = 16000) -> str:
        if broken:
            raise RuntimeError("ONNX Runtime ran out of memory")
        return str(real(pcm, sample_rate))

    monkeypatch.setattr(moonshine, "transcribe", failing_while_broken)
    async with RTVIClient(server.ws_url) as client:
        await client.client_ready()
        await client.stream(weather_pcm)
        await client.wait_for("error", timeout=30)
        broken = False
        await speak_and_wait_for_answer(client, weather_pcm)
    errors = [e.data["error"] for e in client.of_type("error")]
    assert any("Speech recognition failed" in error for error in errors), errors
    assert "weather" in words(final_transcript(client))
    assert client.turns


@pytest.fixture
async def openai_fake() -> AsyncIterator[OpenAIFake]:
    async with OpenAIFake(api_key=None) as fake:
        yield fake


@pytest.fixture
def llm_server(openai_fake: OpenAIFake) -> Iterator[tuple[ServerThread, OpenAIFake]]:
    """An offline-brain server whose responder is an OpenAI-compatible fake."""
    with running_server(llm_base_url=openai_fake.base_url, llm_timeout=2.0) as server:
        yield server, openai_fake


async def test_the_openai_responder_answers_through_the_fake(
    llm_server: tuple[ServerThread, OpenAIFake], weather_pcm: bytes
) -> None:
    """With TALKLINE_LLM_BASE_URL set, the answer streams from the chat-completions server."""
    server, fake = llm_server
    async with RTVIClient(server.ws_url) as client:
        ready = await client.client_ready()
        await speak_and_wait_for_answer(client, weather_pcm)
    assert ready.data["about"]["responder"] == "openai"
    assert "I heard:" in bot_text(client) and "weather" in bot_text(client)
    request = fake.completions[0].body
    assert request is not None
    assert request["stream"] is True and request["model"] == "llama3.2"
    assert request["messages"][0]["role"] == "system"
    assert peak(bytes(client.bot_audio)) > 1000


@pytest.mark.parametrize("fault", ["down", "slow"])
async def test_a_failing_llm_gets_a_spoken_apology_and_an_error(
    llm_server: tuple[ServerThread, OpenAIFake], weather_pcm: bytes, fault: str
) -> None:
    """The LLM is down (503) or slow (past llm_timeout): an error event and a short apology."""
    server, fake = llm_server
    if fault == "down":
        fake.fail_next(status=503, times=5)
    else:
        fake.first_chunk_delay = 6.0
    async with RTVIClient(server.ws_url) as client:
        await client.client_ready()
        await speak_and_wait_for_answer(client, weather_pcm)
    errors = " ".join(e.data["error"] for e in client.of_type("error"))
    assert "The language model failed" in errors
    assert APOLOGY in bot_text(client)
    assert peak(bytes(client.bot_audio)) > 1000


class NeverReads:
    """A WebSocket whose sends block forever, like a client that stopped reading."""

    def __init__(self) -> None:
        self.closed_with: tuple[Any, ...] | None = None

    async def send_bytes(self, data: bytes) -> None:
        await asyncio.Event().wait()

    async def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)
        await asyncio.Event().wait()


async def test_a_client_that_never_reads_cannot_hang_the_server() -> None:
    """Writes are bounded: a blocked send is abandoned, later ones are dropped, close ends."""
    stalled = []
    never_reads = NeverReads()
    socket = SessionSocket(
        never_reads,  # type: ignore[arg-type]
        write_timeout=0.2,
        on_stalled=lambda: stalled.append(True),
    )
    async with asyncio.timeout(2):
        await socket.send_bytes(b"audio")
        await socket.send_bytes(b"more audio")
        socket.set_close(1008, EndReason.CLIENT_NOT_READING.label)
        await socket.close()
    assert stalled == [True] and socket.state is SocketState.CLOSED
    assert never_reads.closed_with == (1008, EndReason.CLIENT_NOT_READING.label)
