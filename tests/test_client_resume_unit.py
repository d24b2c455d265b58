"""When the resuming client comes back by itself, and when it must not (no server needed)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from websockets.asyncio.server import ServerConnection, serve

from talkline import client_resume
from talkline.client import Event
from talkline.client_resume import ResumingRTVIClient

OFFER = {"type": "session-resumable", "resume": "secret", "window_secs": 60}


def offered() -> ResumingRTVIClient:
    """A client the server has offered a resume to (it never connects here)."""
    client = ResumingRTVIClient("ws://127.0.0.1:9/ws")
    client.events.append(Event("server-message", time.monotonic(), OFFER))
    return client


def resuming() -> ResumingRTVIClient:
    """An offered client whose socket closed unexpectedly, about to reopen it."""
    client = offered()
    client.close_code, client.resuming = 1006, True
    return client


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[tuple[str, list[ServerConnection]]]:
    """A WebSocket server that accepts and never says a word: its URL, and its connections."""
    connections: list[ServerConnection] = []

    async def silent(connection: ServerConnection) -> None:
        connections.append(connection)
        await connection.wait_closed()

    async with serve(silent, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/ws", connections


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


async def test_a_failure_of_any_kind_on_the_way_back_ends_in_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An error that is not an OSError (aiohttp's ServerDisconnectedError, say) is retried
    until the window ends, and then the client is closed, never left resuming for ever."""
    tries: list[str] = []

    async def disconnected(*_args: object) -> str:
        tries.append("try")
        raise aiohttp.ServerDisconnectedError()

    monkeypatch.setattr(client_resume, "resume_url", disconnected)
    monkeypatch.setattr(client_resume, "BACKOFF_SECS", (0.01,))
    client = offered()
    client.events[-1] = Event("server-message", time.monotonic(), OFFER | {"window_secs": 0.2})
    client.close_code = 1006
    client._on_closed()
    async with asyncio.timeout(5):
        await client.wait_until(lambda: client.closed)
    assert len(tries) > 1
    failed = client.of_type("resume-failed")
    assert failed and failed[0].data["error"] == "ServerDisconnectedError", failed


async def test_a_reopen_given_up_leaves_no_socket_or_reader_behind() -> None:
    """A server that accepts but never says bot-ready: the attempt's socket is closed and its
    reader ended, so it cannot later close the client's next connection in its name. It is
    closed as "going away" (1001): the server may have resumed the conversation onto it, and a
    normal close (1000) would have ended the conversation the next attempt comes back to."""
    async with silent_server() as (url, open_connections):
        client = resuming()
        waits = client.wait_until
        client.wait_until = lambda predicate, **kw: waits(predicate, **kw | {"timeout": 0.2})  # type: ignore[method-assign]
        with pytest.raises(TimeoutError):
            await client._reopen(url)
        assert client._reader is not None and client._reader.done()
        async with asyncio.timeout(5):
            await open_connections[0].wait_closed()
        assert client.close_code == 1006 and client._ws is None
        assert open_connections[0].close_code == 1001


async def test_a_reopen_the_server_refuses_fails_at_once_not_after_the_wait() -> None:
    """/ws accepts, then refuses (1013: full, or the resume not ready): the attempt ends as
    the socket closes, not when the bot-ready wait runs out (30 s each, two in a window)."""

    async def refusing(connection: ServerConnection) -> None:
        await asyncio.sleep(0.05)
        await connection.close(1013, "server full")

    async with serve(refusing, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        client = resuming()
        with pytest.raises(ConnectionError, match="1013"):  # not the wait's TimeoutError
            await client._reopen(f"ws://127.0.0.1:{port}/ws")
        assert client._ws is None and client.resuming


async def test_a_reopen_cut_short_by_the_user_leaving_ends_the_conversation() -> None:
    """close() while an attempt waits for bot-ready: that socket closes normally (1000), so the
    server forgets the conversation instead of keeping it resumable for the whole window."""
    async with silent_server() as (url, open_connections):
        client = resuming()
        client._resuming = asyncio.create_task(client._reopen(url))
        async with asyncio.timeout(5):
            while not open_connections:
                await asyncio.sleep(0.01)
            await client.close()
            await open_connections[0].wait_closed()
        assert open_connections[0].close_code == 1000
        assert client.closed
