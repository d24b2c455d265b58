"""A local HTTP server run as a supervised child process, shared by every session.

Piper's TTS server and llama.cpp's LLM server both run this way: the supervisor starts the
process, waits until it answers over HTTP, restarts it if it dies (on the same port, so
sessions need not know), and stops it on exit. Subclasses say which command to run and
which path answers once the server is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import sys

import aiohttp
from loguru import logger

from talkline.processes import free_port, terminate

STOP_TIMEOUT_SECS = 5.0
RESTART_BACKOFF_SECS = (0.2, 0.5, 1.0, 2.0, 5.0)
PR_SET_PDEATHSIG = 1


class ChildServerUnavailableError(RuntimeError):
    """A child server did not come up."""


def die_with_parent() -> None:
    """In the child before exec: on Linux, get SIGTERM when talkline dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ChildServer:
    """Starts, health-checks, restarts and stops one HTTP server on 127.0.0.1."""

    name = "child server"  # in log lines and errors
    health_path = "/"  # answers 200 once the server can serve
    start_timeout_secs = 60.0
    unavailable: type[ChildServerUnavailableError] = ChildServerUnavailableError

    def __init__(self, *, port: int = 0):
        self.port = port or free_port()
        self.restarts = 0
        self._process: asyncio.subprocess.Process | None = None
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

    async def _spawn(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            *self.command(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        await self._wait_until_ready(self._process)
        logger.info(f"{self.name} serving at {self.url}, pid {self._process.pid}")

    async def _wait_until_ready(self, process: asyncio.subprocess.Process) -> None:
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
        if self._process:
            await terminate(self._process, STOP_TIMEOUT_SECS)
