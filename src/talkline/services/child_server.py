"""A local HTTP server run as a supervised child process, shared by every session.

Piper's TTS server and llama.cpp's LLM server both run this way: the supervisor starts the
process, waits until it answers over HTTP, restarts it if it dies (on the same port, so
sessions need not know), and stops it on exit. Subclasses say which command to run and
which path answers once the server is ready.

``spawn_early`` starts the first process before there is an event loop (``talkline serve``
calls it before importing the server, so the child's own start overlaps those ~2 s of
imports); ``start`` then adopts it and supervises it like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from typing import Any

import aiohttp
from loguru import logger

from talkline.processes import ChildProcess, free_port, terminate

STOP_TIMEOUT_SECS = 5.0
RESTART_BACKOFF_SECS = (0.2, 0.5, 1.0, 2.0, 5.0)
PR_SET_PDEATHSIG = 1
EXIT_POLL_SECS = 0.2  # how often an adopted process is checked where pidfd is missing


class ChildServerUnavailableError(RuntimeError):
    """A child server did not come up."""


def die_with_parent() -> None:
    """In the child before exec: on Linux, get SIGTERM when talkline dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


# How every child starts, early (Popen) or not (asyncio): no stdio, and gone with talkline.
CHILD_STARTUP: dict[str, Any] = {
    "stdin": subprocess.DEVNULL,
    "stdout": subprocess.DEVNULL,
    "stderr": subprocess.DEVNULL,
    "preexec_fn": die_with_parent,
}


class AdoptedProcess:
    """A ``subprocess.Popen`` started before the event loop, with the parts of asyncio's
    ``Process`` the supervisor uses."""

    def __init__(self, popen: subprocess.Popen[bytes]):
        self._popen = popen
        self.pid = popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def terminate(self) -> None:
        self._popen.terminate()

    def kill(self) -> None:
        self._popen.kill()

    def stop_now(self, timeout: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds, with no event loop."""
        self._popen.terminate()
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            self._popen.wait()

    async def wait(self) -> int:
        """The exit code, once the process has exited (a pidfd wakes the loop on Linux)."""
        if self._popen.poll() is None:
            pidfd = self._pidfd()
            if pidfd is not None:
                await self._exited(pidfd)
            while self._popen.poll() is None:
                await asyncio.sleep(EXIT_POLL_SECS)
        return self._popen.wait()

    def _pidfd(self) -> int | None:
        """A descriptor readable once the process exits; None where the system has none
        (not Linux, a kernel before 5.3, a seccomp profile that refuses it)."""
        try:
            return os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            return None

    @staticmethod
    async def _exited(pidfd: int) -> None:
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def readable() -> None:  # until the reader is removed, it may be called again
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(pidfd, readable)
        try:
            await exited
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)


class ChildServer:
    """Starts, health-checks, restarts and stops one HTTP server on 127.0.0.1."""

    name = "child server"  # in log lines and errors
    health_path = "/"  # answers 200 once the server can serve
    start_timeout_secs = 60.0
    unavailable: type[ChildServerUnavailableError] = ChildServerUnavailableError

    def __init__(self, *, port: int = 0):
        self.port = port or free_port()
        self.restarts = 0
        self._process: ChildProcess | None = None
        self._early: AdoptedProcess | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    def command(self) -> list[str]:
        """The command line that starts the server on ``self.port``."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self) -> None:
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"{self.name}-supervisor")

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await self._terminate()

    def spawn_early(self) -> None:
        """Start the first process now, with no event loop yet; ``start`` adopts it."""
        popen = subprocess.Popen(self.command(), **CHILD_STARTUP)
        self._early = AdoptedProcess(popen)

    def abandon_early(self) -> None:
        """Stop the process ``spawn_early`` started, when it will never be started."""
        if self._early is not None:
            self._early.stop_now(STOP_TIMEOUT_SECS)
            self._early = None

    async def _spawn(self) -> None:
        if self._early is not None:
            self._process, self._early = self._early, None
        else:
            self._process = await asyncio.create_subprocess_exec(*self.command(), **CHILD_STARTUP)
        await self._wait_until_ready(self._process)
        logger.info(f"{self.name} serving at {self.url}, pid {self._process.pid}")

    async def _wait_until_ready(self, process: ChildProcess) -> None:
        deadline = asyncio.get_running_loop().time() + self.start_timeout_secs
        async with aiohttp.ClientSession() as http:
            while asyncio.get_running_loop().time() < deadline:
                if process.returncode is not None:
                    raise self.unavailable(f"{self.name} exited with code {process.returncode}")
                if await self._answers(http):
                    return
                await asyncio.sleep(0.1)
        await self._terminate()
        raise self.unavailable(f"{self.name} did not answer within {self.start_timeout_secs:.0f} s")

    async def _answers(self, http: aiohttp.ClientSession) -> bool:
        url = f"{self.url}{self.health_path}"
        try:
            async with http.get(url, timeout=aiohttp.ClientTimeout(1)) as reply:
                return reply.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def healthy(self) -> bool:
        if not self._process or self._process.returncode is not None:
            return False
        async with aiohttp.ClientSession() as http:
            return await self._answers(http)

    async def _supervise(self) -> None:
        failures = 0
        while not self._stopping:
            assert self._process is not None
            code = await self._process.wait()
            if self._stopping:
                return
            delay = RESTART_BACKOFF_SECS[min(failures, len(RESTART_BACKOFF_SECS) - 1)]
            logger.warning(f"{self.name} exited with code {code}; restarting in {delay:.1f} s")
            await asyncio.sleep(delay)
            try:
                await self._spawn()
                self.restarts += 1
                failures = 0
            except (ChildServerUnavailableError, OSError) as error:
                failures += 1
                logger.error(f"{self.name} restart failed: {error}")

    async def _terminate(self) -> None:
        for process in (self._process, self._early):  # spawned early and never started: too
            if process is not None:
                await terminate(process, STOP_TIMEOUT_SECS)
