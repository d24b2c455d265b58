"""End to end over real sockets: the offline brain holds voice conversations on /ws."""

from __future__ import annotations

import asyncio

import httpx

from talkline.audio import peak, silence
from talkline.client import RTVIClient
from tests.support import (
    ANSWER_TIMEOUT,
    ServerThread,
    final_transcript,
    speak_and_wait_for_answer,
    words,
)


async def test_spoken_question_is_transcribed_and_answered_with_audio(
    server: ServerThread, weather_pcm: bytes
) -> None:
    """A spoken sentence gets a transcript with its words and a non-silent spoken answer."""
    async with RTVIClient(server.ws_url) as client:
        ready = await client.client_ready()
        assert ready.data["about"]["brain"] == "local"
        assert ready.data["about"]["responder"] == "echo"
        assert ready.data["about"]["replica"] == server.settings.replica  # who answers
        await speak_and_wait_for_answer(client, weather_pcm)

    heard = words(final_transcript(client))
    assert {"weather", "like", "today"} <= heard, heard
    assert peak(bytes(client.bot_audio)) > 1000
    assert client.turns and client.turns[0].latency is not None

    order = [e.type for e in client.events]
    sequence = [
        "bot-ready",
        "user-started-speaking",
        "user-transcription",
        "bot-started-speaking",
        "bot-stopped-speaking",
    ]
    positions = [order.index(kind) for kind in sequence]
    assert positions == sorted(positions), order
    assert "user-stopped-speaking" in order
    assert order.index("user-stopped-speaking") < order.index("bot-started-speaking")
    bot_text = " ".join(e.data.get("text", "") for e in client.of_type("bot-output"))
    assert "You said" in bot_text and "weather" in bot_text


async def test_two_sessions_at_once_get_their_own_answers(
    server: ServerThread, weather_pcm: bytes, dragon_pcm: bytes
) -> None:
    """Two concurrent sessions each hear only their own words back."""
    async with RTVIClient(server.ws_url) as one, RTVIClient(server.ws_url) as two:
        await asyncio.gather(one.client_ready(), two.client_ready())
        await asyncio.gather(
            speak_and_wait_for_answer(one, weather_pcm),
            speak_and_wait_for_answer(two, dragon_pcm),
        )
    assert "weather" in words(final_transcript(one))
    assert "dragon" in words(final_transcript(two))
    assert "dragon" not in words(final_transcript(one))
    assert "weather" not in words(final_transcript(two))
    assert peak(bytes(one.bot_audio)) > 1000 and peak(bytes(two.bot_audio)) > 1000


async def test_bad_input_gets_errors_and_the_session_still_answers(
    server: ServerThread, weather_pcm: bytes
) -> None:
    """Text frames, garbage bytes, unknown RTVI types and wrong-rate audio do not end it."""
    async with RTVIClient(server.ws_url) as client:
        await client.send_message({"label": "rtvi-ai", "type": "client-ready", "id": "1"})
        await client.wait_for("bot-ready")
        await client.connection.send("hello, I am text")
        await client.connection.send(b"\xff\x00garbage\x13")
        await client.send_message({"label": "rtvi-ai", "type": "no-such-type", "id": "2"})
        from talkline.client import audio_frame

        await client.connection.send(audio_frame(silence(0.01, 192000), sample_rate=192000))
        await client.wait_until(lambda: len(client.of_type("error")) >= 3, timeout=10)
        await client.wait_for("error-response", timeout=10)
        await speak_and_wait_for_answer(client, weather_pcm)

    errors = " | ".join(e.data["error"] for e in client.of_type("error"))
    assert "text WebSocket messages are not accepted" in errors
    assert "not a valid protobuf Frame" in errors
    assert "192000 Hz is not supported" in errors
    assert "weather" in words(final_transcript(client))
    assert client.turns


async def test_speaking_over_the_bot_interrupts_its_answer(
    server: ServerThread, dragon_pcm: bytes, weather_pcm: bytes
) -> None:
    """Barge-in: speech during the bot's answer stops its audio and sends bot-interrupted."""
    async with RTVIClient(server.ws_url) as client:
        await client.client_ready()
        await client.stream(dragon_pcm)
        while not client.of_type("bot-started-speaking"):
            await client.silence(0.064)
        started = client.of_type("bot-started-speaking")[0]
        heard_first = final_transcript(client)
        await client.stream(weather_pcm)
        async with asyncio.timeout(ANSWER_TIMEOUT):
            while "weather" not in words(final_transcript(client)):
                await client.silence(0.256)
        async with httpx.AsyncClient() as http:  # the whole first answer, as Piper says it
            spoken = f"You said: {heard_first.strip()}"
            full = await http.post(f"{server.shared.tts_url}/synthesize", json={"text": spoken})

    interrupted = [e for e in client.of_type("bot-interrupted") if e.at > started.at]
    assert interrupted, [e.type for e in client.events]
    full_audio_bytes = (len(full.content) - 44) * 24000 // 22050  # Piper's 22.05 kHz WAV
    assert "dragon" in words(heard_first)
    assert len(client.turns[0].audio) < 0.8 * full_audio_bytes
