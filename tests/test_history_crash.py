"""A replica killed mid-conversation (kill -9): when it starts again, the session it never
closed is listed as ``server-lost`` with the turns that had finished."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from talkline.client import RTVIClient
from talkline.processes import free_port
from tests.history_support import wait_for_session
from tests.support import speak_and_wait_for_answer, words
from tests.test_shutdown import children_running

READY_SECS = 120.0


@contextlib.contextmanager
def serving(data_dir: Path, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`talkline serve` as replica "crashy", its history in ``data_dir``, until killed."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TALKLINE_", "GEMINI_"))}
    env |= {
        "TALKLINE_BRAIN": "local",
        "TALKLINE_PORT": str(port),
        "TALKLINE_REPLICA": "crashy",
        "TALKLINE_DATA_DIR": str(data_dir),
    }
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "talkline", "serve", "--host", "127.0.0.1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, url)
        yield process, url
    finally:
        kill_hard(process)


def wait_ready(process: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + READY_SECS
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/ready").status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError("talkline serve did not become ready")


def kill_hard(process: subprocess.Popen[bytes]) -> None:
    """kill -9 the server, then its Piper process (which a real crash would orphan too)."""
    children = children_running(process.pid, "piper")
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
        process.wait()
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


async def test_a_session_killed_with_its_server_is_listed_as_server_lost(
    tmp_path: Path, weather_pcm: bytes
) -> None:
    """One finished turn is written while the session is live; after kill -9 and a restart
    of the same replica the session is ended, reason server-lost, with both turns kept."""
    log = tmp_path / "serve.log"
    with serving(tmp_path, log) as (process, url):
        client = RTVIClient(url.replace("http", "ws") + "/ws")
        await client.connect()
        session_id = (await client.client_ready()).data["about"]["session_id"]
        await speak_and_wait_for_answer(client, weather_pcm)
        live = await wait_for_session(url, session_id, ended=False, turns=2)
        assert live["ended_at"] is None and live["end_reason"] is None
        kill_hard(process)
        with contextlib.suppress(Exception):
            await client.close()
    with serving(tmp_path, log) as (_, url):
        lost = await wait_for_session(url, session_id, turns=2)
    assert lost["end_reason"] == "server-lost", lost
    user, bot = lost["transcript"][:2]
    assert {"weather", "today"} <= words(user["text"]) and "You said" in bot["text"]
    assert lost["turns"] >= 1
