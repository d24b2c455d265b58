"""A child server spawned before the event loop (``spawn_early``): adopted, supervised, stopped."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from talkline.__main__ import early_piper
from talkline.config import Settings
from talkline.resources import ResourceOptions, SharedResources
from talkline.services.child_server import ChildServer
from talkline.services.piper_process import PiperProcess


class StaticServer(ChildServer):
    """Python's own HTTP server: a child that starts in a fraction of a second."""

    name = "static server"

    def __init__(self, directory: Path):
        super().__init__()
        self.directory = directory

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "http.server", str(self.port),
            "--bind", "127.0.0.1", "--directory", str(self.directory),
        ]  # fmt: skip


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): it has exited once its state is Z.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.mark.parametrize("pidfd", ["available", "refused"])
async def test_a_server_spawned_early_is_the_one_started_and_is_restarted_when_it_dies(
    pidfd: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if pidfd == "refused":  # a kernel before 5.3, or a seccomp profile: polled instead

        def refuse(pid: int) -> int:
            raise OSError(errno.ENOSYS, "pidfd_open")

        monkeypatch.setattr(os, "pidfd_open", refuse)
    server = StaticServer(tmp_path)
    server.spawn_early()
    assert server._early is not None
    first = server._early.pid
    try:
        await server.start()
        assert server.pid == first and await server.healthy()
        await asyncio.sleep(0.5)  # the supervisor is waiting on the adopted process
        assert server.pid == first and server.restarts == 0
        os.kill(first, signal.SIGKILL)
        async with asyncio.timeout(20):
            while server.restarts == 0:
                await asyncio.sleep(0.05)
        assert server.pid != first and await server.healthy()
    finally:
        await server.stop()
    assert not alive(first)
    assert server.pid is not None and not alive(server.pid)


async def test_a_server_spawned_early_and_never_started_is_stopped(tmp_path: Path) -> None:
    server = StaticServer(tmp_path)
    server.spawn_early()
    early = server._early
    assert early is not None
    await server.stop()
    assert early.returncode is not None


def test_talkline_serve_spawns_piper_early_only_when_it_runs_piper() -> None:
    offline = Settings(_env_file=None, brain="local")  # type: ignore[call-arg]
    piper = early_piper(offline)
    try:
        assert isinstance(piper, PiperProcess) and piper._early is not None
        assert piper._early.returncode is None
    finally:
        if piper is not None:
            piper.abandon_early()
    external = Settings(_env_file=None, brain="local", piper_url="http://127.0.0.1:9")  # type: ignore[call-arg]
    assert early_piper(external) is None
    key = SecretStr("k")
    gemini = Settings(_env_file=None, brain="gemini", gemini_api_key=key)  # type: ignore[call-arg]
    assert early_piper(gemini) is None


async def test_a_piper_spawned_for_settings_that_run_none_is_stopped(tmp_path: Path) -> None:
    """Resources given an early Piper while their options run none (an external Piper URL)
    stop it at load instead of leaving it running beside the server."""
    server = StaticServer(tmp_path)  # stands in for the early Piper
    server.spawn_early()
    early = server._early
    assert early is not None
    options = ResourceOptions(piper_voice=tmp_path / "voice.onnx", piper_url="http://127.0.0.1:9")
    shared = SharedResources(options, piper=server)  # type: ignore[arg-type]
    shared.start()
    try:
        await shared.wait_ready()
        assert shared.piper is None and early.returncode is not None
    finally:
        await shared.stop()
