"""Every documented combination of stages, end to end through /ws, against wire-level fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from talkline.audio import peak
from talkline.client import RTVIClient
from talkline.config import SettingsError, load_settings
from talkline.emulator import GeminiEmulator
from tests.fakes import DeepgramFake, ElevenLabsFake, OpenAIFake
from tests.support import (
    bot_text,
    final_transcript,
    running_gemini_server,
    running_server,
    speak_and_wait_for_answer,
)

DEEPGRAM_SAYS = "what time is it in tokyo"


@pytest.fixture
async def deepgram() -> AsyncIterator[DeepgramFake]:
    async with DeepgramFake(api_key="dg-key", transcript=DEEPGRAM_SAYS) as fake:
        yield fake


@pytest.fixture
async def elevenlabs() -> AsyncIterator[ElevenLabsFake]:
    async with ElevenLabsFake(api_key="el-key") as fake:
        yield fake


@pytest.fixture
async def openai() -> AsyncIterator[OpenAIFake]:
    async with OpenAIFake(api_key=None) as fake:
        yield fake


async def converse(ws_url: str, pcm: bytes) -> RTVIClient:
    async with RTVIClient(ws_url) as client:
        await client.client_ready()
        await speak_and_wait_for_answer(client, pcm)
    assert peak(bytes(client.bot_audio)) > 1000, "no audible answer"
    return client


def deepgram_settings(fake: DeepgramFake) -> dict[str, str]:
    return {"stt": "deepgram", "deepgram_api_key": "dg-key", "deepgram_base_url": fake.base_url}


def elevenlabs_settings(fake: ElevenLabsFake) -> dict[str, str]:
    return {"tts": "elevenlabs", "elevenlabs_api_key": "el-key", "elevenlabs_url": fake.url}


async def test_deepgram_echo_piper(deepgram: DeepgramFake, weather_pcm: bytes) -> None:
    """Deepgram transcribes; the echo responder and Piper answer."""
    with running_server(**deepgram_settings(deepgram)) as server:
        client = await converse(server.ws_url, weather_pcm)
    assert DEEPGRAM_SAYS in final_transcript(client)
    assert f"You said: {DEEPGRAM_SAYS}" in bot_text(client)
    assert deepgram.audio_bytes > 0
    assert deepgram.connections[0].params["encoding"] == "linear16"


async def test_whisper_echo_elevenlabs(elevenlabs: ElevenLabsFake, weather_pcm: bytes) -> None:
    """Whisper (the offline recognizer's other choice) transcribes; ElevenLabs speaks."""
    with running_server(**elevenlabs_settings(elevenlabs), stt="whisper") as server:
        await converse(server.ws_url, weather_pcm)
    spoken = " ".join(elevenlabs.connections[0].texts)
    assert "You said" in spoken and "weather" in spoken
    assert elevenlabs.connections[0].params["output_format"] == "pcm_24000"


async def test_deepgram_openai_elevenlabs(
    deepgram: DeepgramFake, openai: OpenAIFake, elevenlabs: ElevenLabsFake, weather_pcm: bytes
) -> None:
    """All three outside providers at once."""
    settings = deepgram_settings(deepgram) | elevenlabs_settings(elevenlabs)
    with running_server(**settings, llm_base_url=openai.base_url) as server:
        client = await converse(server.ws_url, weather_pcm)
    assert openai.completions[0].messages[-1]["content"] == DEEPGRAM_SAYS
    assert f"I heard: {DEEPGRAM_SAYS}" in " ".join(elevenlabs.connections[0].texts)
    assert client.turns


@pytest.mark.parametrize("voice", ["piper", "elevenlabs"])
async def test_gemini_text_mode_feeds_another_voice(
    elevenlabs: ElevenLabsFake, weather_pcm: bytes, voice: str
) -> None:
    """Gemini Live answers in text, which Piper or ElevenLabs speaks."""
    extra = elevenlabs_settings(elevenlabs) if voice == "elevenlabs" else {"tts": "piper"}
    async with GeminiEmulator(response_delay=0.1) as emu:
        with running_gemini_server(emu, **extra) as server:
            client = await converse(server.ws_url, weather_pcm)
    setup = emu.connections[0].setup
    assert setup is not None
    config = setup["generation_config"]
    assert config["response_modalities"] == ["TEXT"]
    assert "This is reply 1." in bot_text(client)
    if voice == "elevenlabs":
        assert "This is reply 1." in "".join(elevenlabs.connections[0].texts)


@pytest.mark.parametrize(
    "stages",
    [
        {"brain": "local", "stt": "gemini"},
        {"brain": "local", "tts": "gemini"},
        {"gemini_api_key": "k", "stt": "whisper"},
        {"stt": "deepgram"},
        {"tts": "elevenlabs"},
    ],
)
def test_invalid_combinations_are_refused_in_one_line(stages: dict[str, str]) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None, **stages)
    message = str(refused.value)
    assert "\n" not in message
    assert "combination" in message or "needs" in message
