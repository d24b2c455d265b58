"""The Gemini brain end to end: /ws → Pipecat → the real google-genai SDK → the TLS emulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from talkline.audio import peak, silence
from talkline.client import RTVIClient
from talkline.emulator import GeminiEmulator, wire
from talkline.lifecycle import EndReason
from tests.support import (
    ServerThread,
    heard_or_held_quiet,
    running_gemini_server,
    speak_until_turns,
)

ANSWER_TIMEOUT = 30.0
DEADLINE = "Deadline expired before operation could complete."


@pytest.fixture
async def emulator() -> AsyncIterator[GeminiEmulator]:
    async with GeminiEmulator(reply_seconds=1.0, response_delay=0.1) as emu:
        yield emu


def bot_texts(client: RTVIClient) -> list[str]:
    return [e.data["text"] for e in client.of_type("bot-tts-text")]


def user_texts(client: RTVIClient) -> list[str]:
    return [e.data["text"] for e in client.of_type("user-transcription") if e.data.get("final")]


async def test_spoken_turn_is_answered_with_audio_and_transcripts(
    emulator: GeminiEmulator, weather_pcm: bytes
) -> None:
    """Gemini's transcripts reach the client as RTVI events and its 24 kHz audio plays."""
    with running_gemini_server(emulator) as server:
        async with RTVIClient(server.ws_url) as client:
            ready = await client.client_ready()
            await speak_until_turns(client, weather_pcm, 1)
        await heard_or_held_quiet(server, emulator, client, weather_pcm, times=1)

    assert ready.data["about"]["brain"] == "gemini"
    assert user_texts(client) == ["turn 1"]
    assert bot_texts(client) == ["reply 1"]
    assert peak(bytes(client.bot_audio)) > 1000 and client.bot_sample_rate == 24000
    setup = emulator.connections[0].setup
    assert setup is not None
    assert setup["model"] == "models/gemini-2.5-flash-native-audio-preview-12-2025"
    voice = setup["generation_config"]["speech_config"]["voice_config"]
    assert voice["prebuilt_voice_config"]["voice_name"] == "Aoede"
    assert "session_resumption" in setup and "input_audio_transcription" in setup
    assert "context_window_compression" in setup


async def test_the_upstream_pauses_through_a_long_quiet_and_hears_the_next_question(
    emulator: GeminiEmulator, weather_pcm: bytes
) -> None:
    """5 s of quiet between two questions: Gemini gets at most the first second or so of it
    and an ``audioStreamEnd``, then the second question whole, and answers both."""
    with running_gemini_server(emulator) as server:
        async with RTVIClient(server.ws_url) as client:
            await client.client_ready()
            await speak_until_turns(client, weather_pcm, 1)
            before = emulator.audio_bytes
            await client.silence(5.0)
            quiet_sent = (emulator.audio_bytes - before) / (2 * 16000)
            await speak_until_turns(client, weather_pcm, 2)
        await heard_or_held_quiet(server, emulator, client, weather_pcm, times=2)

    assert quiet_sent < 1.5, quiet_sent
    messages = [wire.normalize(m) for m in emulator.connections[0].messages]
    ends = [m for m in messages if (m.get("realtime_input") or {}).get("audio_stream_end")]
    assert ends, "the pause was not announced with audioStreamEnd"
    assert user_texts(client) == ["turn 1", "turn 2"]
    assert bot_texts(client) == ["reply 1", "reply 2"]


async def test_a_softly_spoken_question_after_a_long_quiet_reaches_gemini_whole(
    weather_pcm: bytes,
) -> None:
    """A quiet talker (peaks at -35 dBFS) after 3 s of quiet, while the upstream is paused:
    the speech gate hears the start of it, and Gemini gets the question whole."""
    samples = np.frombuffer(weather_pcm, dtype=np.int16).astype(np.float64)
    soft = (samples * 580 / np.abs(samples).max()).astype(np.int16).tobytes()
    # vad_threshold: the RMS of a frame the emulator hears as voiced (500 by default)
    emulator = GeminiEmulator(reply_seconds=1.0, response_delay=0.1, vad_threshold=40.0)
    async with emulator:
        with running_gemini_server(emulator) as server:
            async with RTVIClient(server.ws_url) as client:
                await client.client_ready()
                await client.silence(3.0)
                await speak_until_turns(client, soft, 1)
            await heard_or_held_quiet(server, emulator, client, soft, times=1)
    assert user_texts(client) == ["turn 1"]


async def test_go_away_moves_to_a_new_connection_with_the_handle_and_loses_no_audio(
    emulator: GeminiEmulator, weather_pcm: bytes
) -> None:
    """After goAway talkline resumes on a new connection before the deadline; turn 2 answers."""
    emulator.go_away(time_left=3.0, after_turn=1)
    with running_gemini_server(emulator) as server:
        async with RTVIClient(server.ws_url) as client:
            await client.client_ready()
            await speak_until_turns(client, weather_pcm, 1)
            await emulator.wait_for_connections(2, within=10)
            await speak_until_turns(client, weather_pcm, 2)
            await client.silence(0.5)
        await heard_or_held_quiet(server, emulator, client, weather_pcm, times=2)

    first, second = emulator.connections[:2]
    assert first.sent_go_away
    assert first.close_reason != DEADLINE, "talkline waited for the deadline instead of leaving"
    assert second.resumed_handle == first.handles[-1]
    assert user_texts(client) == ["turn 1", "turn 2"]
    assert bot_texts(client) == ["reply 1", "reply 2"]


async def test_close_1011_mid_reply_is_recovered(
    emulator: GeminiEmulator, weather_pcm: bytes
) -> None:
    """Gemini closes 1011 in the middle of an answer; the next turn is answered after resume."""
    emulator.schedule_close(1011, "Internal error occurred.", after_reply_chunks=2)
    with running_gemini_server(emulator) as server:
        async with RTVIClient(server.ws_url) as client:
            await client.client_ready()
            # A microphone goes on sending after the user stops: the turn's end is heard.
            await client.stream(weather_pcm + silence(1.0))
            await emulator.wait_for_connections(2, within=15)
            await speak_until_turns(client, silence(1.0) + weather_pcm, 1)
            async with asyncio.timeout(ANSWER_TIMEOUT):
                while "reply 2" not in bot_texts(client):
                    await client.silence(0.128)
            await client.silence(0.5)
        await heard_or_held_quiet(server, emulator, client, weather_pcm, times=2)

    assert emulator.connections[0].close_code == 1011
    assert emulator.connections[1].resumed_handle is not None
    assert "reply 2" in bot_texts(client)
    assert not [e for e in client.of_type("error") if e.data.get("fatal")]


async def fatal_error(server: ServerThread) -> tuple[RTVIClient, str]:
    async with RTVIClient(server.ws_url) as client:
        await client.send_message({"label": "rtvi-ai", "type": "client-ready", "id": "1"})
        await client.wait_until(
            lambda: any(e.data.get("fatal") for e in client.of_type("error")), timeout=20
        )
        await client.wait_for("closed", timeout=20)
    message = next(e.data["error"] for e in client.of_type("error") if e.data.get("fatal"))
    return client, message


async def test_bad_key_is_a_fatal_error_naming_the_setting() -> None:
    """A rejected API key ends the session with a fatal error that says what to fix."""
    async with GeminiEmulator(valid_keys={"the-right-key"}) as emu:
        with running_gemini_server(emu, gemini_api_key="a-wrong-key") as server:
            client, message = await fatal_error(server)
    assert "API key" in message and "GEMINI_API_KEY" in message
    assert "a-wrong-key" not in message
    failed = EndReason.UPSTREAM_ERROR
    assert client.close_code == failed.close_code == 1011
    assert client.close_reason.startswith(failed.label)


async def test_unknown_model_is_a_fatal_error_naming_the_setting(
    emulator: GeminiEmulator,
) -> None:
    """An unknown model ends the session with a fatal error naming TALKLINE_GEMINI_MODEL."""
    with running_gemini_server(emulator, gemini_model="gemini-0.1-nonexistent") as server:
        client, message = await fatal_error(server)
    assert "gemini-0.1-nonexistent" in message and "TALKLINE_GEMINI_MODEL" in message
    assert client.close_code == 1011


async def test_reconnect_attempts_run_out_with_a_clear_error(
    emulator: GeminiEmulator, weather_pcm: bytes
) -> None:
    """When every reconnect fails the client is told, in words, and the session closes."""
    for connection in range(4):
        emulator.drop(after_seconds=0.2, connection=connection)
    with running_gemini_server(emulator, gemini_reconnect_attempts=2) as server:
        _, message = await fatal_error(server)
    assert "could not restore it after 2 attempts" in message
    assert len(emulator.connections) == 3


async def test_speaking_over_the_answer_interrupts_it(weather_pcm: bytes) -> None:
    """Barge-in: Gemini reports interrupted, the client gets bot-interrupted, audio stops."""
    async with GeminiEmulator(reply_seconds=6.0, response_delay=0.1) as emu:
        with running_gemini_server(emu) as server:
            async with RTVIClient(server.ws_url) as client:
                await client.client_ready()
                await client.stream(weather_pcm)
                async with asyncio.timeout(ANSWER_TIMEOUT):
                    while not client.of_type("bot-started-speaking"):
                        await client.silence(0.064)
                started = client.of_type("bot-started-speaking")[0].at
                await client.stream(weather_pcm)
                await client.silence(1.0)
    assert [e for e in client.of_type("bot-interrupted") if e.at > started]
    assert emu.connections[0].turns[0].interrupted
    first_answer_secs = len(client.turns[0].audio) / 2 / 24000
    assert first_answer_secs < 5.0, first_answer_secs
