"""When the resuming client comes back by itself, and when it must not (no server needed)."""

from __future__ import annotations

import asyncio
import time

from talkline.client import Event
from talkline.client_resume import ResumingRTVIClient

OFFER = {"type": "session-resumable", "resume": "secret", "window_secs": 60}


def offered() -> ResumingRTVIClient:
    """A client the server has offered a resume to (it never connects here)."""
    client = ResumingRTVIClient("ws://127.0.0.1:9/ws")
    client.events.append(Event("server-message", time.monotonic(), OFFER))
    return client


async def test_an_unexpected_close_starts_a_resume() -> None:
    client = offered()
    client.close_code = 1006
    client._on_closed()
    assert client.resuming and not client.closed
    await client.close()  # cancels the resume it started
    assert not client.resuming


async def test_a_close_that_ends_abnormally_after_close_was_called_starts_none() -> None:
    """close() began (say its close handshake timed out, so the reader saw 1006): the client
    stays closed, instead of resuming while talk waits for ``closed`` (CI once waited 120 s)."""
    client = offered()
    await client.close()
    client.close_code = 1006
    client._on_closed()
    assert not client.resuming and client.closed
    await asyncio.sleep(0)
