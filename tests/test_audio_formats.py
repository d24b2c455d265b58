"""End to end: speech in the formats devices capture is converted, heard and answered."""

from __future__ import annotations

import asyncio

import pytest

from talkline.audio import as_format, silence
from talkline.client import RTVIClient, audio_frame
from talkline.emulator import GeminiEmulator
from tests.support import (
    ANSWER_TIMEOUT,
    ServerThread,
    best_match,
    final_transcript,
    quiet_not_sent,
    running_gemini_server,
    speak_until_turns,
    speech_of,
    turn_audio,
    upstream_audio,
    words,
)

FORMATS = [(48000, 2), (44100, 1), (8000, 1)]
REFUSED = [
    (audio_frame(silence(0.032, 4000), 4000), "4000 Hz is not supported: send 8000 to 96000 Hz"),
    (audio_frame(silence(0.02, 192000), 192000), "192000 Hz is not supported"),
    (audio_frame(silence(0.032), 16000, 0), "0 channels is not supported: send 1 to 8"),
    (audio_frame(silence(0.002) * 64, 16000, 64), "64 channels is not supported"),
    (audio_frame(bytes(6), 48000, 2), "6 bytes is not whole 16-bit samples for 2 channels"),
]

MIC_SPREAD = 0.3  # each channel a little quieter than the last, as two microphones


async def speak_until_heard(client: RTVIClient, pcm: bytes, word: str, answers: int) -> None:
    """Stream ``pcm`` in the client's format, then silence until ``word`` is in the transcript
    and the bot has finished its ``answers``-th answer."""
    await client.stream(pcm)
    async with asyncio.timeout(ANSWER_TIMEOUT):
        while not (
            word in words(final_transcript(client))
            and len(client.of_type("bot-stopped-speaking")) >= answers
        ):
            await client.silence(0.256)


@pytest.mark.parametrize(("rate", "channels"), FORMATS, ids=[f"{r}x{c}" for r, c in FORMATS])
async def test_speech_in_a_device_format_is_transcribed_and_answered(
    server: ServerThread, weather_pcm: bytes, rate: int, channels: int
) -> None:
    """A client streaming 48 kHz stereo, 44.1 kHz or 8 kHz speech is heard and answered."""
    async with RTVIClient(server.ws_url, sample_rate=rate, channels=channels) as client:
        await client.client_ready()
        await speak_until_heard(
            client, as_format(weather_pcm, rate, channels, spread=MIC_SPREAD), "weather", 1
        )
    assert {"weather", "like", "today"} <= words(final_transcript(client))
    assert not client.of_type("error"), client.of_type("error")


async def test_a_client_may_change_its_rate_mid_session(
    server: ServerThread, weather_pcm: bytes, dragon_pcm: bytes
) -> None:
    """First 48 kHz stereo, then 16 kHz mono in the same session: both utterances answered."""
    async with RTVIClient(server.ws_url, sample_rate=48000, channels=2) as client:
        await client.client_ready()
        await speak_until_heard(
            client, as_format(dragon_pcm, 48000, 2, spread=MIC_SPREAD), "dragon", 1
        )
        client.sample_rate, client.channels = 16000, 1
        await speak_until_heard(client, weather_pcm, "weather", 2)
    heard = [e.data["text"] for e in client.of_type("user-transcription") if e.data.get("final")]
    assert "dragon" in words(heard[0]) and "weather" in words(" ".join(heard[1:])), heard
    assert not client.of_type("error"), client.of_type("error")


async def test_refused_formats_get_an_error_and_the_session_still_answers(
    server: ServerThread, weather_pcm: bytes
) -> None:
    """Rates outside 8-96 kHz, 0 or 64 channels, split samples: each is named, none ends it."""
    async with RTVIClient(server.ws_url) as client:
        await client.client_ready()
        for frame, _ in REFUSED:
            await client.connection.send(frame)
            await asyncio.sleep(0.25)  # under the error echo limit (5 a second)
        await client.wait_until(lambda: len(client.of_type("error")) >= len(REFUSED), timeout=10)
        await speak_until_heard(client, weather_pcm, "weather", 1)
    errors = [e.data["error"] for e in client.of_type("error")]
    for (_, expected), error in zip(REFUSED, errors, strict=True):
        assert expected in error and error.endswith("The session continues."), error


async def test_gemini_receives_16k_mono_whatever_the_client_sends(weather_pcm: bytes) -> None:
    """48 kHz stereo, 44.1 kHz and 8 kHz turns in one session reach Gemini as 16 kHz mono
    audio that is the question as spoken, and each is answered."""
    async with GeminiEmulator(reply_seconds=1.0, response_delay=0.1) as emulator:
        with running_gemini_server(emulator) as server:
            async with RTVIClient(server.ws_url) as client:
                await client.client_ready()
                for answered, (rate, channels) in enumerate(FORMATS, start=1):
                    client.sample_rate, client.channels = rate, channels
                    await speak_until_turns(
                        client, as_format(weather_pcm, rate, channels, spread=MIC_SPREAD), answered
                    )
                await client.silence(0.5)
            held = await quiet_not_sent(server)

    mimes, pcm = upstream_audio(emulator)
    assert mimes == {"audio/pcm;rate=16000"}
    # Sent or held back as quiet, at 16 kHz mono: not twice as much (stereo), not 3x (48 kHz)
    assert abs((len(pcm) + held) / (2 * 16000) - client.sent_audio_secs) < 0.1
    # The waveform itself, not a recognizer's reading of it (Whisper's int8 kernels read the
    # same 44.1 kHz turn differently on another CPU): the question spoken at 16 kHz is in each
    # turn at a normalized correlation near 1. A lost or repeated chunk, a wrong rate or an
    # interleaved channel each leave it far lower (8 kHz, missing the top band, is ~0.996).
    matches = [best_match(audio, speech_of(weather_pcm)) for audio in turn_audio(emulator, pcm)]
    assert len(matches) == len(FORMATS) and min(matches) > 0.98, matches
    assert not client.of_type("error"), client.of_type("error")
