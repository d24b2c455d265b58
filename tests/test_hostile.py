"""Hostile input, one case per row: each gets a clear error or a clean close with a named code.

A healthy session runs through the whole catalogue and still completes its turn; a storm of
connections leaves no task, file descriptor or memory behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import resource
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from talkline.audio import silence
from talkline.client import RTVIClient, audio_frame, message_frame, rtvi_message
from talkline.lifecycle import EndReason
from tests.support import (
    ServerThread,
    final_transcript,
    running_server,
    speak_and_wait_for_answer,
    words,
)

Send = Callable[[RTVIClient], Awaitable[None]]


@dataclass
class Case:
    """One hostile input and what the server must answer."""

    name: str
    send: Send
    error: str | None = None  # text of the RTVI error (or error-response) it must get
    close: int | None = None  # or the close code it must get
    ready_first: bool = True


def raw(payload: bytes | str) -> Send:
    async def send(client: RTVIClient) -> None:
        await client.connection.send(payload)

    return send


def rtvi(message: object) -> Send:
    return raw(message_frame(message))  # type: ignore[arg-type]


def audio(pcm: bytes, rate: int = 16000, channels: int = 1) -> Send:
    return raw(audio_frame(pcm, rate, channels))


def twice_ready() -> Send:
    return rtvi(rtvi_message("client-ready", {"version": "2.1.0", "about": {}}))


def faster_than_real_time(rate: int = 16000, channels: int = 1) -> Send:
    async def send(client: RTVIClient) -> None:
        client.sample_rate, client.channels = rate, channels
        for _ in range(400):  # 12.8 s of audio at once
            await client.send_audio(silence(0.032, rate) * channels)

    return send


def flood() -> Send:
    async def send(client: RTVIClient) -> None:
        ping = message_frame(rtvi_message("client-message", {"t": "ping", "d": {}}))
        for _ in range(2000):
            await client.connection.send(ping)

    return send


def nothing() -> Send:
    async def send(client: RTVIClient) -> None:
        return None

    return send


VALID_AUDIO = audio_frame(silence(0.032))

CATALOGUE = [
    Case("text frame", raw("hello"), error="text WebSocket messages are not accepted"),
    Case("random bytes", raw(os.urandom(64) + b"\xff\xff"), error="not a valid protobuf Frame"),
    Case("truncated protobuf", raw(VALID_AUDIO[: len(VALID_AUDIO) // 2]), error="not a valid"),
    Case("oversize message", raw(b"\x00" * 70_000), error="over the 65536 byte limit"),
    Case("message over the socket limit", raw(b"\x00" * 2_000_000), close=1009),
    Case("audio at 8 kHz (converted)", audio(silence(0.032, 8000), 8000)),
    Case("audio at 44.1 kHz (converted)", audio(silence(0.032, 44100), 44100)),
    Case("audio at 48 kHz stereo (converted)", audio(silence(0.064, 48000), 48000, 2)),
    Case("stereo audio at 16 kHz (down-mixed)", audio(silence(0.064), channels=2)),
    Case("audio at 4 kHz", audio(silence(0.032, 4000), 4000), error="4000 Hz is not supported"),
    Case("audio at 192 kHz", audio(silence(0.01, 192000), 192000), error="192000 Hz is not"),
    Case("audio with no rate", audio(silence(0.032), 0), error="0 Hz is not supported"),
    Case("audio with 0 channels", audio(silence(0.032), channels=0), error="0 channels is not"),
    Case("audio with 64 channels", audio(bytes(4096), channels=64), error="64 channels is not"),
    Case("zero-length audio", audio(b""), error="not whole 16-bit samples"),
    Case("odd-length audio", audio(b"\x01\x02\x03"), error="not whole 16-bit samples"),
    Case("stereo audio split mid-sample", audio(bytes(6), 48000, 2), error="6 bytes is not whole"),
    Case(
        "RTVI data of the wrong type",
        rtvi({"label": "rtvi-ai", "type": "send-text", "id": "1", "data": "hi"}),
        error='"data" must be an object',
    ),
    Case("RTVI without a type", rtvi({"label": "rtvi-ai", "id": "1"}), error='a string "type"'),
    Case("RTVI that is not an object", rtvi([1, 2, 3]), error="must be a JSON object"),
    Case(
        "RTVI send-text with a number",
        rtvi({"label": "rtvi-ai", "type": "send-text", "id": "1", "data": {"content": 5}}),
        error="Invalid",
    ),
    Case("unknown RTVI type", rtvi(rtvi_message("launch-missiles", {})), error="Unsupported"),
    Case("client-ready twice", twice_ready(), error=None),
    Case("audio before client-ready", audio(silence(0.032)), ready_first=False),
    Case(
        "audio much faster than real time",
        faster_than_real_time(),
        error="faster than real time",
        close=1008,
    ),
    Case(
        "48 kHz stereo faster than real time",
        faster_than_real_time(48000, 2),
        error="faster than real time",
        close=1008,
    ),
    Case("a flood of messages", flood(), close=1008),
    Case("connects and never sends", nothing(), ready_first=False, close=1008),
]


@pytest.fixture(scope="module")
def guarded() -> Iterator[ServerThread]:
    with running_server(ready_timeout=2.0, max_sessions_per_client=200) as server:
        yield server


def errors_of(client: RTVIClient) -> list[str]:
    kinds = ("error", "error-response")
    return [str(e.data.get("error")) for e in client.events if e.type in kinds]


async def run_case(server: ServerThread, case: Case) -> RTVIClient:
    async with RTVIClient(server.ws_url) as client:
        if case.ready_first:
            await client.client_ready()
        with contextlib.suppress(ConnectionClosed):  # the server may close while we send
            await case.send(client)
        if case.close is not None:
            await client.wait_for("closed", timeout=15)
        elif case.error is not None:
            await client.wait_until(
                lambda: any(case.error in e for e in errors_of(client)), timeout=10
            )
        else:
            if not case.ready_first:
                await client.client_ready()
            await client.send_message(rtvi_message("client-ready", {"version": "2.1.0"}))
            await client.wait_until(lambda: len(client.of_type("bot-ready")) >= 2, timeout=10)
    return client


@pytest.mark.parametrize("case", CATALOGUE, ids=[case.name for case in CATALOGUE])
async def test_hostile_input(guarded: ServerThread, case: Case) -> None:
    client = await run_case(guarded, case)
    said = errors_of(client)[:1]
    closed = [f"closed {client.close_code} {client.close_reason}"] if case.close else []
    print(f"| {case.name} | {'; '.join(said + closed) or 'answered normally'} |")  # with -s
    if case.close is not None:
        assert client.close_code == case.close, (client.close_code, client.close_reason)
    if case.error is not None:
        assert any(case.error in error for error in errors_of(client)), errors_of(client)
    if case.close is None:
        assert client.close_code in (1000, 1005), "closed by the client, not the server"
    if case.error is None and case.close is None:
        assert not errors_of(client), errors_of(client)


async def test_a_healthy_session_completes_its_turn_during_the_catalogue(
    guarded: ServerThread, weather_pcm: bytes
) -> None:
    """Every hostile case runs at once beside a healthy session, which still gets its answer."""
    async with RTVIClient(guarded.ws_url) as healthy:
        await healthy.client_ready()
        hostile = [run_case(guarded, case) for case in CATALOGUE]
        results = await asyncio.gather(
            speak_and_wait_for_answer(healthy, weather_pcm), *hostile, return_exceptions=True
        )
    assert results[0] is None, results[0]
    # Its own words, not another session's: two of the question's content words (on a loaded
    # machine the VAD can start late and the first word or two go unheard; that is all).
    heard = words(final_transcript(healthy)) & {"weather", "like", "paris", "today"}
    assert len(heard) >= 2, final_transcript(healthy)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def refused_total(server: ServerThread) -> float:
    """Connections the server refused so far, every reason summed."""
    registry = server.state.metrics.registry
    return sum(
        sample.value
        for metric in registry.collect()
        if metric.name == "talkline_sessions_refused"
        for sample in metric.samples
        if sample.name == "talkline_sessions_refused_total"
    )


async def test_a_storm_of_connections_leaves_nothing_behind(guarded: ServerThread) -> None:
    """1,000 connect/close cycles (some ready, some not): tasks, fds and sessions all return."""
    attempts = 1000
    gc.collect()
    tasks_before, fds_before = guarded.task_count(), open_fds()
    started_before = guarded.state.admission.started_total
    refused_before = refused_total(guarded)
    refused_seen = 0

    async def cycle(index: int) -> None:
        nonlocal refused_seen
        async with connect(guarded.ws_url) as ws:
            try:
                if index % 2:
                    await ws.send(message_frame(rtvi_message("client-ready", {"version": "2"})))
                    await ws.recv()
            except ConnectionClosed as closed:  # full for a moment: refused, which is fine
                assert closed.rcvd is not None and closed.rcvd.code == 1013, closed.rcvd
                assert "server full" in closed.rcvd.reason
                refused_seen += 1

    for start in range(0, attempts, 50):
        await asyncio.gather(*(cycle(i) for i in range(start, start + 50)))
    async with asyncio.timeout(30):
        while len(guarded.state.admission) or guarded.task_count() > tasks_before:
            await asyncio.sleep(0.1)
    gc.collect()
    fds_after, tasks_after = open_fds(), guarded.task_count()
    admitted = guarded.state.admission.started_total - started_before
    refused = refused_total(guarded) - refused_before
    print(f"storm: tasks {tasks_before}->{tasks_after}, fds {fds_before}->{fds_after}, "
          f"max RSS {rss_mb():.0f} MB, admitted {admitted}, refused {refused:g}")  # fmt: skip
    assert tasks_after <= tasks_before
    assert fds_after <= fds_before + 5
    assert admitted + refused == attempts
    assert refused_seen <= refused


RTVI_TYPES = st.sampled_from(
    ["client-ready", "send-text", "client-message", "disconnect-bot", "raw-audio",
     "llm-function-call-result", "dtmf", "append-to-context", "x"]
)  # fmt: skip


def json_containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    json_containers,
    max_leaves=8,
)
MESSAGES = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=50),
    st.builds(
        lambda kind, data: message_frame(
            {"label": "rtvi-ai", "type": kind, "id": "f", "data": data}
        ),
        RTVI_TYPES,
        JSON_VALUES,
    ),
    st.builds(lambda raw_json: message_frame(raw_json), JSON_VALUES),
    st.builds(
        lambda pcm, rate, ch: audio_frame(pcm, rate, ch),
        st.binary(max_size=600),
        st.sampled_from([0, 8000, 16000, 22050, 48000]),
        st.integers(0, 3),
    ),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=st.lists(MESSAGES, min_size=1, max_size=30))
def test_fuzzed_frames_never_break_a_session(guarded: ServerThread, batch: list[object]) -> None:
    """Any mix of bytes, text, RTVI JSON and audio frames: the session answers a ping after."""

    async def session() -> RTVIClient:
        async with RTVIClient(guarded.ws_url) as client:
            await client.client_ready()
            for message in batch:
                if client.closed:
                    break
                await client.connection.send(message)  # type: ignore[arg-type]
            if not client.closed:
                readies = len(client.of_type("bot-ready"))
                await client.send_message(rtvi_message("client-ready", {"version": "2.1.0"}))
                await client.wait_until(
                    lambda: len(client.of_type("bot-ready")) > readies or client.closed, timeout=10
                )
        return client

    client = asyncio.run(session())
    assert client.close_code in (1000, 1005, 1008), (client.close_code, client.close_reason)
    if client.close_code == 1008:  # only the disconnect-bot message or a limit may end it
        assert client.close_reason.startswith(
            (EndReason.POLICY_VIOLATION.label, EndReason.NO_CLIENT_READY.label)
        ) or any(json.dumps("disconnect-bot") in str(m) for m in batch)
