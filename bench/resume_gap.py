"""Resume gap over repeated crashes: `kill -9` the replica a conversation is on, resume on
another, and time from the kill to the resumed socket's `bot-ready`; also Redis calls.

Two `talkline serve` replicas share a real Redis (started here, on a free port) and one
Gemini emulator. Each round: a conversation with one answered turn on the live replica,
`kill -9` it, resume on the other (POST /connect with the secret, the new socket,
client-ready, bot-ready with `resumed: true`), then restart the killed one in the
background. Redis calls are counted with `INFO commandstats` over a quiet conversation.

    PYTHONPATH=src:. python bench/resume_gap.py --crashes 20
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import redis
from tests.replicas import Replica, redis_server, replicas, start_replica
from tests.support import speak_until_turns
from tests.test_resume import wait_resumable

from talkline.audio import piper_speech, silence
from talkline.client import RTVIClient
from talkline.client_resume import resume_url
from talkline.emulator import GeminiEmulator


async def converse(owner: Replica, pcm: bytes) -> tuple[RTVIClient, str]:
    """A conversation with one answered turn on ``owner``; its client and resume secret."""
    client = RTVIClient(owner.ws_url)
    await client.connect()
    await client.client_ready()
    secret = (await wait_resumable(client))["resume"]
    await speak_until_turns(client, pcm + silence(0.6), 1)
    await asyncio.sleep(0.3)
    return client, secret


async def crash(owner: Replica, other: Replica, client: RTVIClient, secret: str) -> float:
    """`kill -9` ``owner``, resume on ``other``: seconds from the kill to ``bot-ready``."""
    crashed = time.monotonic()
    owner.process.kill()
    resumed = RTVIClient(await resume_url(other.http_url, secret))
    await resumed.connect()
    ready = await resumed.client_ready()
    gap = time.monotonic() - crashed
    assert ready.data["about"]["resumed"] is True, ready.data
    await resumed.close()
    await client.close()
    owner.process.wait()
    return gap


ROUND_TRIPS = ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_hgetall", "cmdstat_exec")


def redis_calls(url: str) -> tuple[int, int]:
    """Round trips (a script or a transaction counts once) and every command run, scripts'
    own commands included, as ``INFO commandstats`` counts them (INFO itself left out)."""
    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
        trips = sum(int(v["calls"]) for k, v in stats.items() if k in ROUND_TRIPS)
        everything = sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")
        return trips, everything
    finally:
        client.close()


async def calls_per_minute(
    replica: Replica, url: str, pcm: bytes, seconds: float
) -> tuple[float, float]:
    """Redis round trips and commands of one conversation with a turn every ~5 s, a minute."""
    before = redis_calls(url)
    client = RTVIClient(replica.ws_url)
    await client.connect()
    await client.client_ready()
    start = time.monotonic()
    turns = 0
    while time.monotonic() - start < seconds:
        turns += 1
        await speak_until_turns(client, pcm + silence(0.6), turns)
        await client.silence(2.0)
    await client.close()
    await asyncio.sleep(0.5)
    minutes = (time.monotonic() - start) / 60
    after = redis_calls(url)
    return (after[0] - before[0]) / minutes, (after[1] - before[1]) / minutes


async def crash_rounds(
    pair: list[Replica], emulator: GeminiEmulator, crashes: int, pcm: bytes, **settings: object
) -> list[float]:
    """Each round crashes the replica the last one resumed on; the killed one restarts
    meanwhile, ready to take the next round's conversation."""
    gaps = []
    restart: asyncio.Task[Replica] | None = None
    for round_ in range(crashes):
        owner, spare = round_ % 2, (round_ + 1) % 2
        client, secret = await converse(pair[owner], pcm)
        if restart is not None:
            pair[spare] = await restart
        gaps.append(await crash(pair[owner], pair[spare], client, secret))
        print(f"crash {round_ + 1}: resumed in {gaps[-1] * 1000:.0f} ms", flush=True)
        dead = pair[owner]
        restart = asyncio.create_task(
            start_replica(dead.name, dead.log.parent, emulator, **settings)
        )
    if restart is not None:
        pair[crashes % 2] = await restart
    return gaps


async def run(crashes: int, minute: float, directory: Path) -> None:
    pcm = piper_speech("What is the weather like?", save=directory / "q.wav")
    with redis_server(directory) as url:
        settings = {"resume_window": 60, "redis_url": url}
        async with (
            GeminiEmulator(reply_seconds=0.5, response_delay=0.1) as emulator,
            replicas(directory, emulator, ("A", "B"), **settings) as pair,
        ):
            gaps = await crash_rounds(pair, emulator, crashes, pcm, **settings)
            per_minute = await calls_per_minute(pair[0], url, pcm, minute)
    report(gaps, per_minute)


def report(gaps: list[float], per_minute: tuple[float, float]) -> None:
    if gaps:
        gaps.sort()
        p95 = gaps[min(len(gaps) - 1, round(0.95 * (len(gaps) - 1)))]
        print(f"resume gap over {len(gaps)} crashes: p50 {statistics.median(gaps) * 1000:.0f} ms, "
              f"p95 {p95 * 1000:.0f} ms, max {gaps[-1] * 1000:.0f} ms")  # fmt: skip
    print(f"Redis per conversation minute (a turn every ~5 s): {per_minute[0]:.1f} round trips, "
          f"{per_minute[1]:.1f} commands counting those inside scripts")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crashes", type=int, default=20)
    parser.add_argument("--minute", type=float, default=60.0, help="seconds of the Redis count")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="resume-gap-") as directory:
        asyncio.run(run(args.crashes, args.minute, Path(directory)))


if __name__ == "__main__":
    main()
