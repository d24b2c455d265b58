"""The processes under test: the server (talkline or the baseline bot) and the emulator.

Each is a subprocess of the bench. `ProcessMonitor` samples a process tree with psutil:
CPU time (so cores used over a window) and resident memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil

from talkline.processes import terminate

READY_TIMEOUT = 120.0
STOP_TIMEOUT = 15.0
SAMPLE_SECS = 0.25
TREE_SECS = 2.0  # how often the list of child processes is read again (it scans all of /proc)


class ServerFailed(RuntimeError):
    """The server under test exited or never became ready."""


@dataclass
class Emulator:
    """A running emulator subprocess and where to reach it."""

    process: asyncio.subprocess.Process
    base_url: str
    ca_file: str
    records_file: Path

    async def finish(self) -> list[dict[str, object]]:
        """Stop it and read what it recorded."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)
        records: list[dict[str, object]] = json.loads(self.records_file.read_text())
        return records


@contextlib.asynccontextmanager
async def emulator(records_file: Path, *, reply_seconds: float) -> AsyncIterator[Emulator]:
    """The bench emulator in instant mode: no response delay, reply audio all at once."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "talkline.bench.emulator_proc",
        "--records",
        str(records_file),
        "--reply-seconds",
        str(reply_seconds),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), READY_TIMEOUT)
        if not line:
            raise ServerFailed("the emulator exited before it was ready")
        info = json.loads(line)
        yield Emulator(process, info["base_url"], info["ca_file"], records_file)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@dataclass
class Server:
    """A server under test, its port, and how long it took to answer /ready."""

    process: asyncio.subprocess.Process
    port: int
    ready_secs: float
    log: Path

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


async def _wait_ready(process: asyncio.subprocess.Process, port: int, log: Path) -> None:
    url = f"http://127.0.0.1:{port}/ready"
    deadline = time.monotonic() + READY_TIMEOUT
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                tail = (await asyncio.to_thread(log.read_text, errors="replace"))[-2000:]
                raise ServerFailed(f"server exited with {process.returncode}:\n{tail}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.02)
    raise ServerFailed(f"no 200 from {url} within {READY_TIMEOUT:.0f} s")


@contextlib.asynccontextmanager
async def server(
    command: list[str], env: dict[str, str], port: int, log: Path
) -> AsyncIterator[Server]:
    """Start ``command``, wait for GET /ready → 200, stop it (SIGTERM, then SIGKILL) after."""
    spawned = time.monotonic()
    with log.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            *command,
            env=os.environ | env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
        )
    try:
        await _wait_ready(process, port, log)
        yield Server(process, port, time.monotonic() - spawned, log)
    finally:
        await terminate(process, STOP_TIMEOUT)


@dataclass
class Usage:
    """CPU seconds and memory of a process tree over a window."""

    cpu_secs: float = 0.0
    main_thread_secs: float = 0.0  # the event loop's thread: 1 core is its ceiling (GIL)
    wall_secs: float = 0.0
    rss_start: int = 0
    rss_peak: int = 0
    samples: list[float] = field(default_factory=list)  # cores used in each sampling interval

    @property
    def median_cores(self) -> float:
        """The median over the sampling intervals: steadier than the mean on a busy machine."""
        return float(statistics.median(self.samples)) if self.samples else self.cores

    @property
    def cores(self) -> float:
        return self.cpu_secs / self.wall_secs if self.wall_secs > 0 else 0.0

    @property
    def main_thread_cores(self) -> float:
        return self.main_thread_secs / self.wall_secs if self.wall_secs > 0 else 0.0


def machine_busy_secs() -> float:
    """CPU seconds the whole machine has spent busy (all cores, anything but idle and I/O
    wait), so far: what the server, the clients, the emulator, the kernel's network work and
    anything else on the machine used together."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def _tree(process: psutil.Process, children: bool) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return [process, *(process.children(recursive=True) if children else [])]
    return []


@dataclass
class _Tree:
    """A process and its children, the list read again at most every ``TREE_SECS``.

    Finding children scans every process on the machine; the sampler runs in the clients'
    process, so doing it four times a second was a seventh of the clients' CPU at N=60.
    """

    process: psutil.Process
    children: bool
    members: list[psutil.Process] = field(default_factory=list)
    read_at: float = -math.inf

    def now(self) -> list[psutil.Process]:
        if time.monotonic() - self.read_at >= TREE_SECS:
            self.members, self.read_at = _tree(self.process, self.children), time.monotonic()
        return self.members


def _main_thread_secs(process: psutil.Process) -> float:
    with contextlib.suppress(psutil.Error):
        for thread in process.threads():
            if thread.id == process.pid:
                return float(thread.user_time + thread.system_time)
    return 0.0


def _cpu_and_rss(members: list[psutil.Process]) -> tuple[float, int]:
    cpu, rss = 0.0, 0
    for member in members:
        with contextlib.suppress(psutil.Error):
            times = member.cpu_times()
            cpu += times.user + times.system
            rss += member.memory_info().rss
    return cpu, rss


@dataclass
class ProcessMonitor:
    """Samples a process (and its children) between `start()` and `stop()`."""

    pid: int
    children: bool = True
    usage: Usage = field(default_factory=Usage)
    _task: asyncio.Task[None] | None = None
    _cpu0: float = 0.0
    _main0: float = 0.0
    _wall0: float = 0.0
    _members: _Tree | None = None

    def start(self) -> None:
        process = psutil.Process(self.pid)
        self._members = _Tree(process, self.children)
        self._cpu0, self.usage.rss_start = _cpu_and_rss(self._members.now())
        self._main0 = _main_thread_secs(process)
        self.usage.rss_peak = self.usage.rss_start
        self._wall0 = time.monotonic()
        self._task = asyncio.create_task(self._sample(process), name=f"monitor-{self.pid}")

    def _update(self, process: psutil.Process) -> None:
        assert self._members is not None, "start() first"
        cpu, rss = _cpu_and_rss(self._members.now())
        self.usage.rss_peak = max(self.usage.rss_peak, rss)
        self.usage.cpu_secs = cpu - self._cpu0
        self.usage.main_thread_secs = _main_thread_secs(process) - self._main0
        self.usage.wall_secs = time.monotonic() - self._wall0

    async def _sample(self, process: psutil.Process) -> None:
        while True:
            cpu, wall = self.usage.cpu_secs, self.usage.wall_secs
            await asyncio.sleep(SAMPLE_SECS)
            self._update(process)
            if self.usage.wall_secs > wall:
                interval = self.usage.wall_secs - wall
                self.usage.samples.append((self.usage.cpu_secs - cpu) / interval)

    async def stop(self) -> Usage:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._update(psutil.Process(self.pid))
        return self.usage
