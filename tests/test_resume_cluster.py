"""Resume across replicas: two `talkline serve` processes sharing a real Redis, one emulator.

A conversation starts on replica A; A dies (`kill -9`), hangs (`SIGSTOP`) or is rolled
(`SIGTERM`); the client resumes on replica B and the Gemini conversation goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from talkline.audio import silence
from talkline.client import RTVIClient
from talkline.client_resume import resume_url
from talkline.coordinator.resume import KEY_PREFIX
from talkline.emulator import GeminiEmulator
from tests.replicas import Replica, redis_server, replicas
from tests.support import speak_until_turns
from tests.test_resume import bot_texts, drop, talk_turns, wait_resumable

WINDOW = 8  # seconds: a keep-alive every 2 s, so a woken owner learns of a takeover soon


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with redis_server(tmp_path) as url:
        yield url


@pytest.fixture
async def emulator() -> AsyncIterator[GeminiEmulator]:
    async with GeminiEmulator(reply_seconds=0.8, response_delay=0.1) as emu:
        yield emu


def pair(
    tmp_path: Path, emulator: GeminiEmulator, redis_url: str
) -> contextlib.AbstractAsyncContextManager[list[Replica]]:
    return replicas(tmp_path, emulator, ("A", "B"), redis_url=redis_url, resume_window=WINDOW)


async def start_on(replica: Replica, pcm: bytes, turns: int) -> tuple[RTVIClient, str]:
    """A conversation of ``turns`` answered turns on ``replica``; its resume secret."""
    client = RTVIClient(replica.ws_url)
    await client.connect()
    await client.client_ready()
    offer = await wait_resumable(client)
    await talk_turns(client, pcm, turns)
    await asyncio.sleep(0.3)  # the last answer's handle reaches Redis
    return client, offer["resume"]


async def resume_on(replica: Replica, secret: str) -> tuple[RTVIClient, dict[str, object]]:
    client = RTVIClient(await resume_url(replica.http_url, secret))
    await client.connect()
    ready = await client.client_ready()
    return client, ready.data["about"]


def stored(redis_url: str, session_id: str) -> dict[str, str]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return client.hgetall(KEY_PREFIX + session_id)  # type: ignore[return-value]
    finally:
        client.close()


async def test_kill_9_resumes_on_another_replica(
    tmp_path: Path, emulator: GeminiEmulator, redis_url: str, weather_pcm: bytes
) -> None:
    """Two turns on A, `kill -9` A, the client resumes on B: turn 3 of the same Gemini
    conversation, from the newest handle. (How long the gap is: bench/resume_gap.py.)"""
    async with pair(tmp_path, emulator, redis_url) as (a, b):
        first, secret = await start_on(a, weather_pcm, 2)
        newest = emulator.connections[0].handles[-1]
        a.process.kill()
        await first.wait_for("closed", timeout=10)
        second, about = await resume_on(b, secret)
        await speak_until_turns(second, weather_pcm + silence(0.6), 1)
        await second.close()

    assert first.close_code == 1006
    assert about["resumed"] is True and about["replica"] == "B"
    assert bot_texts(second) == ["reply 3"]
    assert emulator.connections[-1].resumed_handle == newest


async def test_the_newest_handle_wins_after_a_go_away(
    tmp_path: Path, emulator: GeminiEmulator, redis_url: str, weather_pcm: bytes
) -> None:
    """goAway moves A's upstream to a new connection just before A dies: B resumes from
    the handle that new connection issued, not an older one."""
    emulator.go_away(time_left=2.0, after_turn=1)
    async with pair(tmp_path, emulator, redis_url) as (a, b):
        _, secret = await start_on(a, weather_pcm, 1)
        await emulator.wait_for_connections(2, within=10)
        await emulator.wait_for(lambda: bool(emulator.connections[1].handles), 10)
        await asyncio.sleep(0.3)
        a.process.kill()
        second, about = await resume_on(b, secret)
        await speak_until_turns(second, weather_pcm + silence(0.6), 1)
        await second.close()

    moved, resumed = emulator.connections[1], emulator.connections[-1]
    assert moved.resumed_handle is not None  # the goAway reconnect
    assert resumed.resumed_handle == moved.handles[-1]
    assert about["resumed"] is True and bot_texts(second) == ["reply 2"]


async def test_sigterm_hands_the_conversation_to_another_replica(
    tmp_path: Path, emulator: GeminiEmulator, redis_url: str, weather_pcm: bytes
) -> None:
    """SIGTERM: A tells the client `session-moving`, closes 1012 and exits 0; the client
    resumes on B and the conversation goes on."""
    async with pair(tmp_path, emulator, redis_url) as (a, b):
        first, secret = await start_on(a, weather_pcm, 1)
        a.signal(signal.SIGTERM)
        await first.wait_for("closed", timeout=30)
        second, about = await resume_on(b, secret)
        await speak_until_turns(second, weather_pcm + silence(0.6), 1)
        await second.close()
        exit_code = await a.exited()

    moving = [e.data for e in first.of_type("server-message") if e.data["type"] == "session-moving"]
    assert moving and first.close_code == 1012
    assert exit_code == 0
    assert about["resumed"] is True and bot_texts(second) == ["reply 2"]


async def test_a_half_open_owner_is_fenced(
    tmp_path: Path, emulator: GeminiEmulator, redis_url: str, weather_pcm: bytes
) -> None:
    """A hangs (SIGSTOP) with its sockets open; the client resumes on B. Gemini refuses
    the handle while A's upstream is open, so B starts fresh, seeded. When A wakes it finds
    it was fenced: it closes its old socket with `taken-over` and its upstream, and its
    late writes do not touch the conversation B now owns."""
    async with pair(tmp_path, emulator, redis_url) as (a, b):
        first, secret = await start_on(a, weather_pcm, 1)
        a.signal(signal.SIGSTOP)
        second, about = await resume_on(b, secret)
        session_id = str(about["session_id"])
        a.signal(signal.SIGCONT)
        await first.wait_for("closed", timeout=WINDOW)
        await emulator.wait_for(lambda: emulator.connections[0].closed_at is not None, 10)
        await speak_until_turns(second, weather_pcm + silence(0.6), 1)
        entry = stored(redis_url, session_id)
        await second.close()

    refused = [c for c in emulator.connections if c.handle_refusal]
    assert first.close_code == 1008 and first.close_reason.startswith("taken-over")
    assert about["resumed"] is False and about["replica"] == "B"
    assert refused and refused[0].handle_refusal == "conversation still open on another connection"
    seeds = [m for m in emulator.connections[-1].messages if "client_content" in m]
    assert seeds and "reply 1" in str(seeds[0])
    assert entry["owner"] == "B" and entry["epoch"] == "2"
    assert entry["handle"] in emulator.connections[-1].handles


async def test_a_resume_token_from_one_replica_opens_another(
    tmp_path: Path, emulator: GeminiEmulator, redis_url: str, weather_pcm: bytes
) -> None:
    """No TALKLINE_TOKEN_SECRET: replicas sign resume tokens with the key their Redis keeps,
    so a proxy may send /connect to one replica and /ws to another."""
    async with pair(tmp_path, emulator, redis_url) as (a, b):
        first, secret = await start_on(a, weather_pcm, 1)
        a_url = await resume_url(a.http_url, secret)  # minted by A...
        b_url = b.ws_url + a_url[a_url.index("?") :]  # ...presented to B
        drop(first)
        await first.wait_for("closed", timeout=10)
        second = RTVIClient(b_url)
        await second.connect()
        ready = await second.client_ready()
        await second.close()

    assert ready.data["about"]["replica"] == "B"
    started = first.of_type("bot-ready")[0].data["about"]["session_id"]
    assert ready.data["about"]["session_id"] == started
