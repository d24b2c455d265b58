"""Piper's own HTTP server as a supervised child process, shared by every session.

Piper is GPL-3.0 and talkline is MIT, so Piper never loads into talkline's process: it
runs as ``python -m piper.http_server`` and sessions reach it over HTTP through Pipecat's
``PiperHttpTTSService``. The supervisor starts it, waits until it answers, restarts it if
it dies (on the same port, so sessions need not know), and stops it on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import sys
from pathlib import Path

import aiohttp
from loguru import logger

from talkline.processes import free_port, terminate

START_TIMEOUT_SECS = 60.0
STOP_TIMEOUT_SECS = 5.0
RESTART_BACKOFF_SECS = (0.2, 0.5, 1.0, 2.0, 5.0)
PR_SET_PDEATHSIG = 1


class PiperUnavailableError(RuntimeError):
    """Piper's server did not come up."""


def die_with_parent() -> None:
    """In the child before exec: on Linux, get SIGTERM when talkline dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class PiperProcess:
    """Starts, health-checks, restarts and stops one Piper HTTP server."""

    def __init__(self, voice_path: Path, *, port: int = 0):
        if not voice_path.is_file():
            raise FileNotFoundError(f"no Piper voice at {voice_path}")
        self.voice_path = voice_path
        self.voice_id = voice_path.name.removesuffix(".onnx")
        self.port = port or free_port()
        self.restarts = 0
        self._process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self) -> None:
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="piper-supervisor")

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await self._terminate()

    async def _spawn(self) -> None:
        command = [
            sys.executable, "-m", "piper.http_server",
            "--host", "127.0.0.1", "--port", str(self.port),
            "-m", str(self.voice_path),
            "--data-dir", str(self.voice_path.parent),
        ]  # fmt: skip
        self._process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        await self._wait_until_ready(self._process)
        logger.info(f"Piper ({self.voice_id}) serving at {self.url}, pid {self._process.pid}")

    async def _wait_until_ready(self, process: asyncio.subprocess.Process) -> None:
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT_SECS
        async with aiohttp.ClientSession() as http:
            while asyncio.get_running_loop().time() < deadline:
                if process.returncode is not None:
                    raise PiperUnavailableError(f"Piper exited with code {process.returncode}")
                if await self._answers(http):
                    return
                await asyncio.sleep(0.1)
        await self._terminate()
        raise PiperUnavailableError(f"Piper did not answer within {START_TIMEOUT_SECS:.0f} s")

    async def _answers(self, http: aiohttp.ClientSession) -> bool:
        try:
            async with http.get(f"{self.url}/info", timeout=aiohttp.ClientTimeout(1)) as reply:
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
            logger.warning(f"Piper exited with code {code}; restarting in {delay:.1f} s")
            await asyncio.sleep(delay)
            try:
                await self._spawn()
                self.restarts += 1
                failures = 0
            except (PiperUnavailableError, OSError) as error:
                failures += 1
                logger.error(f"Piper restart failed: {error}")

    async def _terminate(self) -> None:
        if self._process:
            await terminate(self._process, STOP_TIMEOUT_SECS)
