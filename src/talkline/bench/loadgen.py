"""N simulated users in one asyncio process, each an `RTVIClient` streaming a `Plan`.

Clients connect a few at a time, say ``client-ready``, wait for ``bot-ready``, then start
their streams spread evenly over ``stagger`` seconds so their turns do not all end at once.
Every chunk's send time and every bot audio frame's arrival time are kept for analysis.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from array import array
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from talkline.bench.speech import CHUNK_SECS, Plan, tag
from talkline.client import RTVIClient, audio_frame

CONNECT_CONCURRENCY = 10
CONNECT_TIMEOUT = 30.0
LAG_TICK = 0.01
KEPT_EVENTS = frozenset({"user-stopped-speaking", "metrics"})


class BenchClient(RTVIClient):
    """An `RTVIClient` that keeps the arrival time and size of every bot audio frame."""

    def __init__(self, url: str, number: int, *, tagged: bool = True) -> None:
        super().__init__(url)
        self.number = number
        self.tagged = tagged
        self.audio_times = array("d")
        self.audio_bytes = array("l")
        self.sent_at = array("d")

    def _on_audio(self, audio: Any, now: float) -> None:
        self.audio_times.append(now)
        self.audio_bytes.append(len(audio.audio))
        super()._on_audio(audio, now)

    async def play(self, plan: Plan, start: float) -> None:
        """Send every chunk of ``plan``, the first at ``start``, paced like a microphone."""
        send = self.connection.send
        for seq, chunk in enumerate(plan.chunks):
            await asyncio.sleep(max(0.0, start + seq * CHUNK_SECS - time.monotonic()))
            pcm = tag(chunk, self.number, seq) if self.tagged else chunk
            frame = audio_frame(pcm, plan.format.rate, plan.format.channels)
            self.sent_at.append(time.monotonic())
            await send(frame)


@dataclass
class ClientResult:
    """What one simulated user sent and heard."""

    number: int
    sent_at: list[float] = field(default_factory=list)
    audio_times: list[float] = field(default_factory=list)
    audio_bytes: list[int] = field(default_factory=list)
    error: str | None = None
    events: list[tuple[str, float, dict[str, Any]]] = field(default_factory=list)


@dataclass
class LoadResult:
    """The outcome of one load run."""

    clients: list[ClientResult]
    started_at: float  # all clients connected, streams about to start
    ended_at: float
    connect_secs: float
    loop_lag: list[float]


class LagProbe:
    """Measures how late this process's event loop wakes up, i.e. whether the clients keep up."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            due = time.monotonic() + LAG_TICK
            await asyncio.sleep(LAG_TICK)
            self.lags.append(max(0.0, time.monotonic() - due))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bench-lag-probe")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def _connect(client: BenchClient, gate: asyncio.Semaphore) -> None:
    async with gate, asyncio.timeout(CONNECT_TIMEOUT):
        await client.connect()
        await client.client_ready()


async def _session(client: BenchClient, plan: Plan, start: float, grace: float) -> None:
    await client.play(plan, start)
    await asyncio.sleep(grace)


def _result(client: BenchClient, error: BaseException | None) -> ClientResult:
    return ClientResult(
        client.number,
        list(client.sent_at),
        list(client.audio_times),
        list(client.audio_bytes),
        None if error is None else f"{type(error).__name__}: {error}",
        [(e.type, e.at, e.data) for e in client.events if e.type in KEPT_EVENTS],
    )


async def run_load(
    url: str,
    sessions: int,
    plan: Plan,
    *,
    stagger: float = 2.0,
    grace: float = 1.0,
    tagged: bool = True,
) -> LoadResult:
    """Connect ``sessions`` clients to ``url`` and have each one stream ``plan``."""
    clients = [BenchClient(url, number, tagged=tagged) for number in range(sessions)]
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    began = time.monotonic()
    connected = await asyncio.gather(*(_connect(c, gate) for c in clients), return_exceptions=True)
    start = time.monotonic() + 0.2
    probe = LagProbe()
    probe.start()
    runs: list[Coroutine[Any, Any, object]] = []
    for index, (client, outcome) in enumerate(zip(clients, connected, strict=True)):
        if isinstance(outcome, BaseException):
            runs.append(asyncio.sleep(0, result=outcome))
            continue
        offset = stagger * index / max(1, sessions)
        runs.append(_session(client, plan, start + offset, grace))
    outcomes = await asyncio.gather(*runs, return_exceptions=True)
    ended = time.monotonic()
    await probe.stop()
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    results = []
    for client, first, second in zip(clients, connected, outcomes, strict=True):
        error = first if isinstance(first, BaseException) else second
        results.append(_result(client, error if isinstance(error, BaseException) else None))
    return LoadResult(results, start, ended, start - began, probe.lags)
