"""Graceful shutdown of a real `talkline serve` process on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from talkline.audio import peak, piper_speech
from talkline.client import RTVIClient
from talkline.lifecycle import EndReason
from talkline.processes import free_port
from talkline.session import END_GRACE_SECS
from tests.support import words


def children_running(pid: int, needle: str) -> list[int]:
    """Processes whose parent is ``pid`` and whose command line contains ``needle``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid and needle in cmdline:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


@pytest.fixture
def served(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TALKLINE_", "GEMINI_"))}
    env |= {"TALKLINE_BRAIN": "local", "TALKLINE_DRAIN_TIMEOUT": "20", "TALKLINE_PORT": str(port)}
    env |= getattr(request, "param", {})
    with (tmp_path / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "talkline", "serve", "--host", "127.0.0.1"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready").status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    try:
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


LONG_QUESTION = (
    "Please tell me a long story about a green dragon who lives in a cold cave high up "
    "in the mountains and guards a great pile of gold"
)
QUIET_SECS = 1.5  # no bot audio for this long: the answer is over
# Of the answer's length without SIGTERM, for a transcript as long: a comma heard in one turn
# and not the other moves Piper's length by ~10%; an answer cut at the end grace is ~0.7.
WHOLE = 0.8
SILENT_PEAK = 300  # int16 peak below which Piper's output is its trailing silence


@pytest.fixture(scope="module")
def long_pcm(speech_dir: Path) -> bytes:
    """A question whose echoed answer lasts longer than the session's end grace."""
    return piper_speech(LONG_QUESTION, save=speech_dir / "long.wav")


@dataclass
class Answer:
    """One answer as the user heard it: seconds of bot audio and the bot's words.

    ``asked`` is what the server transcribed of the question in the same turn: the echo
    responder's answer repeats it, so it is the answer's own measure of "whole" (the same audio
    can be transcribed a little differently from one turn to the next).
    """

    seconds: float
    text: str
    asked: str


class Marks:
    """Where the client's audio and events stood, to take what came after."""

    def __init__(self, client: RTVIClient):
        self.client, self.audio, self.events = client, len(client.bot_audio), len(client.events)

    def answer(self) -> Answer:
        client = self.client
        seconds = (len(client.bot_audio) - self.audio) / 2 / client.bot_sample_rate
        events = client.events[self.events :]
        outputs = [e.data.get("text", "") for e in events if e.type == "bot-output"]
        asked = [
            e.data["text"] for e in events if e.type == "user-transcription" and e.data.get("final")
        ]
        return Answer(seconds, " ".join(outputs), " ".join(asked))

    def saw(self, kind: str) -> bool:
        return any(e.type == kind for e in self.client.events[self.events :])


async def reference_answer(client: RTVIClient, pcm: bytes) -> Answer:
    """Speak ``pcm`` and hear its whole answer, with no signal: the length to compare with."""
    marks = Marks(client)
    await client.stream(pcm)
    heard, quiet_since = len(client.bot_audio), time.monotonic()
    async with asyncio.timeout(60):
        while not (
            marks.saw("bot-stopped-speaking") and time.monotonic() - quiet_since > QUIET_SECS
        ):
            await client.silence(0.064)
            if len(client.bot_audio) != heard:
                heard, quiet_since = len(client.bot_audio), time.monotonic()
    return marks.answer()


async def until_closed(client: RTVIClient) -> None:
    """Keep the microphone open (silence) until the server closes the session."""
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(60):
            while not client.closed:
                await client.silence(0.064)


def assert_whole(answer: Answer, reference: Answer) -> None:
    """The answer's audio is about as long as the reference's, and it says every word heard.

    The reference's length is scaled by how long each turn's transcript is, since the echoed
    answer's length follows it.
    """
    print(f"answer {answer.seconds:.2f} s after SIGTERM, {reference.seconds:.2f} s without")
    assert answer.asked and reference.asked, (answer, reference)
    expected = reference.seconds * len(answer.asked) / len(reference.asked)
    assert answer.seconds >= WHOLE * expected, (answer, reference)
    missing = words(answer.asked) - words(answer.text)
    assert len(missing) <= 1, f"words of the answer never sent: {missing} ({answer})"


async def test_sigterm_lets_the_current_answer_finish_then_exits_0(
    served: tuple[subprocess.Popen[bytes], str], long_pcm: bytes
) -> None:
    """SIGTERM mid-answer: the answer (longer than the end grace) is heard whole, then 1001.

    Also /ready says 503, new sessions are refused 1013, the process exits 0 and Piper goes.
    """
    process, url = served
    ws_url = url.replace("http", "ws") + "/ws"
    pipers = children_running(process.pid, "piper.http_server")
    assert len(pipers) == 1
    async with RTVIClient(ws_url) as client:
        await client.client_ready()
        reference = await reference_answer(client, long_pcm)
        assert reference.seconds > END_GRACE_SECS, reference
        marks = Marks(client)
        await client.stream(long_pcm)
        while not marks.saw("bot-started-speaking"):
            await client.silence(0.032)
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        async with httpx.AsyncClient() as http:
            async with asyncio.timeout(10):
                while (await http.get(f"{url}/ready")).status_code != 503:
                    await asyncio.sleep(0.05)
        async with RTVIClient(ws_url) as late:
            await late.wait_for("closed", timeout=10)
        await until_closed(client)

    assert late.close_code == 1013 and "shutting down" in late.close_reason
    ending = [e for e in client.of_type("server-message") if e.at >= signalled]
    assert ending and ending[0].data["reason"] == EndReason.SERVER_SHUTDOWN.label
    assert_whole(marks.answer(), reference)
    assert client.close_code == 1001 and client.close_reason.startswith(
        EndReason.SERVER_SHUTDOWN.label
    )
    assert process.wait(timeout=30) == 0
    assert children_running(process.pid, "piper.http_server") == []
    assert not alive(pipers[0])


@pytest.mark.parametrize("at", [-1.2, 0.25], ids=["while-the-user-speaks", "while-transcribing"])
async def test_sigterm_before_the_bot_speaks_still_answers_the_turn_whole(
    served: tuple[subprocess.Popen[bytes], str], weather_pcm: bytes, at: float
) -> None:
    """SIGTERM ``at`` seconds from the end of the question's speech (mid-sentence, or once the
    VAD has stopped and the words are being transcribed, a quarter of a second before the
    turn-taking wait could end): the question is still answered whole."""
    process, url = served
    async with RTVIClient(url.replace("http", "ws") + "/ws") as client:
        await client.client_ready()
        reference = await reference_answer(client, weather_pcm)
        marks = Marks(client)
        cut = (speech_end(weather_pcm) + int(at * 16000) * 2) // 2 * 2
        await client.stream(weather_pcm[:cut])
        process.send_signal(signal.SIGTERM)
        bot_had_started = marks.saw("bot-started-speaking")
        with contextlib.suppress(ConnectionClosed):
            await client.stream(weather_pcm[cut:])
        await until_closed(client)

    assert not bot_had_started, "the signal was meant to come before the answer"
    assert_whole(marks.answer(), reference)
    assert client.close_code == 1001 and client.close_reason.startswith(
        EndReason.SERVER_SHUTDOWN.label
    )
    assert process.wait(timeout=30) == 0


def speech_end(pcm: bytes, chunk: int = 640) -> int:
    """Where the speech in ``pcm`` ends (Piper leaves half a second of silence after it, as
    long as the turn-taking wait): the signal's moment is counted from there."""
    end = len(pcm)
    while end > chunk and peak(pcm[end - chunk : end]) < SILENT_PEAK:
        end -= chunk
    return end


def descendants(pid: int, needle: str) -> list[int]:
    found = children_running(pid, needle)
    for child in children_running(pid, "python"):
        found += children_running(child, needle)
    return found


@pytest.mark.parametrize(
    "served", [{"TALKLINE_WORKERS": "2", "TALKLINE_MAX_SESSIONS": "3"}], indirect=True
)
async def test_workers_share_one_session_cap_and_drain_together(
    served: tuple[subprocess.Popen[bytes], str],
) -> None:
    """Two worker processes on one port: three sessions in all, the rest refused 1013."""
    process, url = served
    ws_url = url.replace("http", "ws") + "/ws"
    workers = children_running(process.pid, "talkline serve --fd")
    assert len(workers) == 2
    held = [RTVIClient(ws_url) for _ in range(3)]
    for client in held:
        await client.connect()
        await client.client_ready()
    extra = [RTVIClient(ws_url) for _ in range(6)]
    for client in extra:
        await client.connect()
        await client.wait_for("closed", timeout=10)
    assert {client.close_code for client in extra} == {1013}
    assert all("server full" in client.close_reason for client in extra)
    async with asyncio.timeout(30):  # one Piper per worker, each up before it serves
        while len(pipers := descendants(process.pid, "piper.http_server")) < 2:
            await asyncio.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    for client in held:
        await client.wait_for("closed", timeout=30)
        assert client.close_code == 1001
    assert process.wait(timeout=30) == 0
    assert not any(alive(pid) for pid in [*workers, *pipers])
