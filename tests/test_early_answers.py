"""End to end over real sockets: the offline brain answers during the turn's wait, once.

A real server (Moonshine, Smart Turn, the echo responder, Piper) hears speech Piper made.
Its waits are longer than the defaults, so that the answer is surely started before the
turn ends and a mid-sentence pause surely falls inside the wait: what is tested is which
answer is heard, never how soon.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import pytest

from talkline.audio import piper_speech, silence
from talkline.bench.turns import vad_pauses
from talkline.client import RTVIClient
from talkline.services import moonshine_stt
from talkline.services.turn_models import TurnModels
from tests.fakes import OpenAIFake
from tests.support import (
    ServerThread,
    final_transcript,
    running_server,
    speak_and_wait_for_answer,
    words,
)

# Seconds of silence that end a turn, whatever the words: the pause in ``paused_sentence``
# lasts about 1.15 s as the VAD hears it (Piper's own silences, the VAD's start time).
WAIT = 2.0
QUIET_AFTER = 2.0  # listened to after the answer, for a second one


@contextlib.contextmanager
def patient(wait: float = WAIT, **settings: Any) -> Iterator[ServerThread]:
    """A server with long waits, and a long budget for Moonshine's transcripts: on a busy
    test machine they can come after its p99 (0.5 s), and Pipecat then ends the turn on the
    words it has, which splits a sentence with a pause in it whether answers start early or
    not."""
    waits = {f"turn_{kind}_pause_secs": wait for kind in ("complete", "disputed", "unsure")}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(moonshine_stt, "TTFS_P99_SECS", WAIT)
        with running_server(turn_speculate=True, **waits, **settings) as server:
            yield server


@pytest.fixture(scope="module")
def patient_server() -> Iterator[ServerThread]:
    with patient() as server:
        yield server


def paused_sentence() -> bytes:
    """'I'd like to book a table.' … 'For two people, please.', half a second apart
    (about 1.15 s as the VAD hears it)."""
    first = piper_speech("I'd like to book a table.", tail=0.0)
    return first + silence(0.5) + piper_speech("For two people, please.", lead=0.0)


async def answers_to(server: ServerThread, pcm: bytes) -> RTVIClient:
    """Speak ``pcm``, then keep quiet until the answer has ended and a while after."""
    async with RTVIClient(server.ws_url) as client:
        await client.client_ready()
        await speak_and_wait_for_answer(client, pcm)
        await client.silence(QUIET_AFTER)
    return client


def spoken(client: RTVIClient) -> str:
    """What the bot said, each piece once (bot-output tells of each piece when it is new and
    again when it has been spoken)."""
    said = [e for e in client.of_type("bot-output") if e.data.get("spoken_status") == "completed"]
    return " ".join(e.data.get("text", "") for e in said)


def early_answers(lines: list[str]) -> list[str]:
    """The words each answer started during a wait was for, from the strategy's log."""
    found = (re.search(r"answering early, during the wait: \[(.*)\]", line) for line in lines)
    return [match.group(1) for match in found if match]


async def test_a_complete_sentence_answered_early_is_heard_once(
    patient_server: ServerThread, weather_pcm: bytes, logged: list[str]
) -> None:
    """The answer started during the wait is the one heard, once, with the right words."""
    client = await answers_to(patient_server, weather_pcm)
    assert len(client.of_type("bot-started-speaking")) == 1, [e.type for e in client.events]
    text = spoken(client)
    assert text.count("You said") == 1, text
    assert {"weather", "paris", "today"} <= words(text), text
    assert early_answers(logged) == [final_transcript(client).strip()], logged


async def test_a_pause_mid_sentence_gets_one_answer_to_the_whole_sentence(
    patient_server: ServerThread, logged: list[str]
) -> None:
    """'I'd like to book a table.' … 'For two people, please.': the early answer to the
    first part is withdrawn when the user goes on; the one answer heard has both parts."""
    client = await answers_to(patient_server, paused_sentence())
    assert len(client.of_type("bot-started-speaking")) == 1, [e.type for e in client.events]
    text = spoken(client)
    assert text.count("You said") == 1, text
    assert {"table", "two", "people"} <= words(text), text
    started = early_answers(logged)
    assert len(started) == 2 and "table" in words(started[0]), started  # the first part
    assert "people" not in words(started[0]) and "people" in words(started[1]), started
    assert "withdrawing the early answer" in " ".join(logged)
    told_once(client, {"table", "two", "people"})


def told_once(client: RTVIClient, said: set[str]) -> None:
    """The client was told of one answer, the one it heard: the withdrawn one's
    bot-llm-started, bot-llm-text (the web page's "about to say" line) and bot-tts-started
    never reached it."""
    told = " ".join("".join(e.data.get("text", "") for e in client.of_type("bot-llm-text")).split())
    assert told.count("You said") + told.count("I heard") == 1 and said <= words(told), told
    for kind in ("bot-llm-started", "bot-llm-stopped"):
        assert len(client.of_type(kind)) == 1, [e.type for e in client.events]
    tts = len(client.of_type("bot-tts-started"))
    assert tts == len(client.of_type("bot-tts-stopped")) >= 1, [e.type for e in client.events]


async def test_an_llm_answers_a_sentence_with_a_pause_once_and_whole(logged: list[str]) -> None:
    """The same with an LLM responder, whose own hold Pipecat keeps: the LLM is asked about
    the first part, then about the whole sentence, and only the second answer is heard."""
    async with OpenAIFake(api_key=None, chunk_delay=0.05) as llm:
        with patient(llm_base_url=llm.base_url) as server:
            client = await answers_to(server, paused_sentence())
    assert len(client.of_type("bot-started-speaking")) == 1, [e.type for e in client.events]
    text = spoken(client)
    assert text.count("I heard") == 1 and {"table", "two", "people"} <= words(text), text
    asked = [words(request.messages[-1]["content"]) for request in llm.completions]
    assert len(asked) == 2 and "table" in asked[0] and "people" not in asked[0], asked
    assert {"table", "people"} <= asked[1], asked
    told_once(client, {"table", "two", "people"})


def heard_and_confirmed(pcm: bytes) -> tuple[float, float]:
    """The first pause in ``pcm`` as the server's VAD hears it: from the end of speech to
    hearing speech again, and to confirming it (``start_secs`` of it later)."""
    models = TurnModels(turn_threads=1)
    try:
        first = vad_pauses(models, pcm)[0]
    finally:
        models.close()
    assert first.onset is not None and first.resumed is not None
    return first.onset - first.speech_end, first.resumed - first.speech_end


async def test_a_pause_shorter_than_the_wait_as_heard_keeps_the_sentence_whole() -> None:
    """The turn's wait lies midway between the pause as the VAD hears it and as it confirms
    it: a server that waited for confirmed speech would end the turn in the pause and answer
    twice; holding the end while speech is heard starting keeps the sentence one turn."""
    pcm = paused_sentence()
    heard, confirmed = heard_and_confirmed(pcm)
    assert confirmed - heard > 0.15, (heard, confirmed)  # the VAD's start_secs (0.2 s)
    with patient(wait=(heard + confirmed) / 2) as server:
        client = await answers_to(server, pcm)
    assert len(client.of_type("bot-started-speaking")) == 1, [e.type for e in client.events]
    text = spoken(client)
    assert text.count("You said") == 1 and {"table", "two", "people"} <= words(text), text
