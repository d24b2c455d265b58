"""Real processes for resume tests: a Redis server and `talkline serve` replicas sharing it.

Each runs on a free loopback port, its files in the test's temporary directory. The
replicas talk to a Gemini emulator the test runs in its own event loop, so everything that
waits here is async (a blocking wait would stall the emulator).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from talkline.emulator import GeminiEmulator
from talkline.processes import free_port
from tests.cluster import running_redis
from tests.support import OnLoopback

START_TIMEOUT_SECS = 90.0


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """Debian's ``redis-server`` on a free port, no persistence; yields its URL."""
    with running_redis(directory) as server:
        yield server.url


@dataclass
class Replica(OnLoopback):
    """One `talkline serve` process."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    async def exited(self, within: float = 60.0) -> int:
        deadline = time.monotonic() + within
        while (code := self.process.poll()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not exit")
            await asyncio.sleep(0.05)
        return code


def replica_env(name: str, port: int, emulator: GeminiEmulator, **settings: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TALKLINE_", "GEMINI_"))}
    env |= {
        "TALKLINE_BRAIN": "gemini",
        "GEMINI_API_KEY": "test-key",
        "TALKLINE_GEMINI_BASE_URL": emulator.base_url,
        "TALKLINE_GEMINI_CA_FILE": str(emulator.ca_file),
        "TALKLINE_REPLICA": name,
        "TALKLINE_PORT": str(port),
        "TALKLINE_LOG_LEVEL": "INFO",
    }
    return env | {f"TALKLINE_{k.upper()}": str(v) for k, v in settings.items()}


def spawn(name: str, directory: Path, env: dict[str, str]) -> Replica:
    log = directory / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "talkline", "serve", "--host", "127.0.0.1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Replica(name, process, int(env["TALKLINE_PORT"]), log)


async def start_replica(
    name: str, directory: Path, emulator: GeminiEmulator, **settings: Any
) -> Replica:
    replica = spawn(name, directory, replica_env(name, free_port(), emulator, **settings))
    await wait_ready(replica)
    return replica


async def wait_ready(replica: Replica) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECS
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            if replica.process.poll() is not None:
                raise RuntimeError(f"{replica.name} exited: {replica.log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(f"{replica.http_url}/ready")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{replica.name} not ready")


@contextlib.asynccontextmanager
async def replicas(
    directory: Path, emulator: GeminiEmulator, names: tuple[str, ...], **settings: Any
) -> AsyncIterator[list[Replica]]:
    """Replicas started together; each one in the list (the caller may put restarted ones
    in it) still running at the end is killed."""
    started = list(
        await asyncio.gather(
            *(start_replica(name, directory, emulator, **settings) for name in names)
        )
    )
    try:
        yield started
    finally:
        for replica in started:
            if replica.process.poll() is None:
                replica.process.send_signal(signal.SIGCONT)
                replica.process.kill()
                replica.process.wait()
