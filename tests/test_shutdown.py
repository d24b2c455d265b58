"""Graceful shutdown of a real `talkline serve` process on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from talkline.client import RTVIClient
from talkline.processes import free_port


def children_running(pid: int, needle: str) -> list[int]:
    """Processes whose parent is ``pid`` and whose command line contains ``needle``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid and needle in cmdline:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


@pytest.fixture
def served(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TALKLINE_", "GEMINI_"))}
    env |= {"TALKLINE_BRAIN": "local", "TALKLINE_DRAIN_TIMEOUT": "20", "TALKLINE_PORT": str(port)}
    env |= getattr(request, "param", {})
    with (tmp_path / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "talkline", "serve", "--host", "127.0.0.1"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready").status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    try:
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_sigterm_lets_the_current_answer_finish_then_exits_0(
    served: tuple[subprocess.Popen[bytes], str], weather_pcm: bytes
) -> None:
    """SIGTERM: /ready 503, new sessions 1013, live ones told and finish, close 1001, exit 0."""
    process, url = served
    ws_url = url.replace("http", "ws") + "/ws"
    pipers = children_running(process.pid, "piper.http_server")
    assert len(pipers) == 1
    async with RTVIClient(ws_url) as client:
        await client.client_ready()
        await client.stream(weather_pcm)
        while not client.of_type("bot-started-speaking"):
            await client.silence(0.032)
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        async with httpx.AsyncClient() as http:
            async with asyncio.timeout(10):
                while (await http.get(f"{url}/ready")).status_code != 503:
                    await asyncio.sleep(0.05)
        async with RTVIClient(ws_url) as late:
            await late.wait_for("closed", timeout=10)
        with contextlib.suppress(ConnectionClosed):
            while not client.closed:
                await client.silence(0.064)

    assert late.close_code == 1013 and "shutting down" in late.close_reason
    ending = [e for e in client.of_type("server-message") if e.at >= signalled]
    assert ending and ending[0].data["reason"] == "server-shutdown"
    finished = [e for e in client.of_type("bot-stopped-speaking") if e.at >= signalled]
    assert finished, "the answer under way was cut off"
    assert client.close_code == 1001 and client.close_reason.startswith("server-shutdown")
    assert process.wait(timeout=30) == 0
    assert children_running(process.pid, "piper.http_server") == []
    assert not alive(pipers[0])


def descendants(pid: int, needle: str) -> list[int]:
    found = children_running(pid, needle)
    for child in children_running(pid, "python"):
        found += children_running(child, needle)
    return found


@pytest.mark.parametrize(
    "served", [{"TALKLINE_WORKERS": "2", "TALKLINE_MAX_SESSIONS": "3"}], indirect=True
)
async def test_workers_share_one_session_cap_and_drain_together(
    served: tuple[subprocess.Popen[bytes], str],
) -> None:
    """Two worker processes on one port: three sessions in all, the rest refused 1013."""
    process, url = served
    ws_url = url.replace("http", "ws") + "/ws"
    workers = children_running(process.pid, "talkline serve --fd")
    assert len(workers) == 2
    held = [RTVIClient(ws_url) for _ in range(3)]
    for client in held:
        await client.connect()
        await client.client_ready()
    extra = [RTVIClient(ws_url) for _ in range(6)]
    for client in extra:
        await client.connect()
        await client.wait_for("closed", timeout=10)
    assert {client.close_code for client in extra} == {1013}
    assert all("server full" in client.close_reason for client in extra)
    async with asyncio.timeout(30):  # one Piper per worker, each up before it serves
        while len(pipers := descendants(process.pid, "piper.http_server")) < 2:
            await asyncio.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    for client in held:
        await client.wait_for("closed", timeout=30)
        assert client.close_code == 1001
    assert process.wait(timeout=30) == 0
    assert not any(alive(pid) for pid in [*workers, *pipers])
