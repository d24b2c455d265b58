"""Audio that arrives in bursts is heard whole (the offline brain's segmented recognizers).

A client on a poor network, or a server whose loop stalled, delivers a second or two of
microphone audio at once. The VAD that delimits segments runs after the recognizer, so its
"started speaking" came back after the speech had gone by, and Pipecat's recognizer had kept
only the last second: "What is the weather like in Paris today?" was heard as "Today.".
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from talkline.client import RTVIClient
from tests.support import ServerThread, final_transcript, running_server

WEATHER_WORDS = {"what", "weather", "like", "paris", "today"}
DRAGON_WORDS = {"please", "tell", "story", "green", "dragon"}


def words(text: str) -> set[str]:
    return {word.strip(".,?!").lower() for word in text.split()}


@pytest.fixture(scope="module", params=["moonshine", "whisper"])
def recognizer(request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    # Two utterances may arrive in one burst (by default a client may be 3 s ahead, 200/s).
    with running_server(
        stt=request.param, audio_burst_secs=8.0, max_messages_per_second=1000.0
    ) as server:
        yield server


async def burst_then_wait(server: ServerThread, pcm: bytes, *, until: set[str]) -> str:
    """A second of paced silence, ``pcm`` all at once, then paced silence until the bot has
    answered and the words ``until`` have all been heard (or a minute has passed)."""
    async with RTVIClient(server.ws_url) as client:
        await client.client_ready()
        await client.silence(1.0)
        await client.stream(pcm, realtime=False)
        deadline = asyncio.get_running_loop().time() + 60
        while asyncio.get_running_loop().time() < deadline:
            heard = words(final_transcript(client))
            if client.of_type("bot-stopped-speaking") and until <= heard:
                break
            await client.silence(0.256)
        return final_transcript(client)


async def test_an_utterance_sent_in_one_burst_is_heard_from_its_first_word(
    recognizer: ServerThread, weather_pcm: bytes
) -> None:
    heard = await burst_then_wait(recognizer, weather_pcm, until={"today"})
    assert len(words(heard) & WEATHER_WORDS) >= 4, heard


async def test_two_utterances_in_one_burst_are_both_heard_whole(
    recognizer: ServerThread, weather_pcm: bytes, dragon_pcm: bytes
) -> None:
    """The second begins in audio that reached the recognizer before the first one's end.
    (On a busy machine the first may be answered before the second is transcribed.)"""
    pause = bytes(int(16000 * 1.0) * 2)
    both = weather_pcm + pause + dragon_pcm
    heard = await burst_then_wait(recognizer, both, until={"today", "dragon"})
    assert len(words(heard) & WEATHER_WORDS) >= 4, heard
    assert len(words(heard) & DRAGON_WORDS) >= 4, heard
