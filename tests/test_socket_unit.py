"""SessionSocket alone: bounded writes and the session's own close code and reason."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi import WebSocketDisconnect

from talkline.transport import SessionSocket, SocketState


class Peer:
    """A WebSocket stand-in that records what was sent and how it was closed."""

    def __init__(self, *, blocks: bool = False, close_error: Exception | None = None):
        self.sent: list[bytes | str] = []
        self.closes: list[tuple[int, str]] = []
        self.blocks = blocks
        self.close_error = close_error
        self.client_state = "connected"

    async def send_bytes(self, data: bytes) -> None:
        await self._send(data)

    async def send_text(self, data: str) -> None:
        await self._send(data)

    async def _send(self, data: bytes | str) -> None:
        if self.blocks:
            await asyncio.Event().wait()
        self.sent.append(data)

    async def close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))
        if self.close_error is not None:
            raise self.close_error
        if self.blocks:
            await asyncio.Event().wait()


def socket_on(peer: Peer, **options: Any) -> SessionSocket:
    return SessionSocket(peer, **options)  # type: ignore[arg-type]


async def test_sends_reach_the_peer_in_order() -> None:
    peer = Peer()
    socket = socket_on(peer)
    await socket.send_bytes(b"audio")
    await socket.send_text("text")
    assert peer.sent == [b"audio", "text"]
    assert socket.state is SocketState.OPEN


async def test_a_blocked_send_is_abandoned_once_and_later_sends_dropped(
    logged: list[str],
) -> None:
    peer = Peer(blocks=True)
    stalls: list[bool] = []
    socket = socket_on(peer, write_timeout=0.05, on_stalled=lambda: stalls.append(True))
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(2):
        await socket.send_bytes(b"one")
        assert loop.time() - started >= 0.05
        await socket.send_text("two")
        await socket.send_bytes(b"three")
    assert socket.state is SocketState.STALLED and stalls == [True] and peer.sent == []
    assert logged == ["client has not read for 0.05 s"]


async def test_a_send_within_the_write_timeout_is_not_a_stall() -> None:
    socket = socket_on(Peer(), write_timeout=5.0, on_stalled=lambda: pytest.fail("stalled"))
    await socket.send_bytes(b"x")
    assert socket.state is SocketState.OPEN


async def test_close_uses_the_code_and_reason_the_session_set() -> None:
    peer = Peer()
    socket = socket_on(peer)
    assert (socket.close_code, socket.close_reason) == (1000, "")
    socket.set_close(1001, "server-shutdown: server shutting down")
    await socket.close()
    assert (
        peer.closes == [(1001, "server-shutdown: server shutting down")]
        and socket.state is SocketState.CLOSED
    )


async def test_close_is_once_only() -> None:
    peer = Peer()
    socket = socket_on(peer)
    await socket.close()
    await socket.close(1011, "again")
    assert peer.closes == [(1000, "")]


async def test_close_given_a_code_and_reason_uses_them() -> None:
    """Pipecat's transport may close with its own code: that one is used as given."""
    peer = Peer()
    socket = socket_on(peer)
    socket.set_close(1001, "set")
    await socket.close(1011, "given")
    assert peer.closes == [(1011, "given")]


async def test_a_close_reason_is_cut_to_what_a_close_frame_holds() -> None:
    """A close frame carries at most 123 bytes of reason."""
    socket = socket_on(Peer())
    socket.set_close(1008, "x" * 200)
    assert socket.close_reason == "x" * 123


@pytest.mark.parametrize(
    "error", [RuntimeError("closed"), WebSocketDisconnect(1006)], ids=["runtime", "disconnect"]
)
async def test_closing_a_socket_the_peer_already_left_is_quiet(
    error: Exception, logged: list[str]
) -> None:
    peer = Peer(close_error=error)
    socket = socket_on(peer)
    await socket.close()
    assert socket.state is SocketState.CLOSED and len(peer.closes) == 1
    assert logged == [f"close after disconnect: {error!r}"]


async def test_a_close_handshake_the_peer_never_answers_is_bounded() -> None:
    peer = Peer(blocks=True)
    socket = socket_on(peer, write_timeout=0.05)
    async with asyncio.timeout(2):
        await socket.close()
    assert socket.state is SocketState.CLOSED and peer.closes == [(1000, "")]


def test_everything_else_is_the_websocket_s() -> None:
    """Pipecat's transport reads the socket's state through the wrapper."""
    assert socket_on(Peer()).client_state == "connected"


async def test_a_send_is_made_by_the_task_that_sends() -> None:
    """No task of its own per send (``asyncio.wait_for`` made one on Python 3.11): it would
    start only after every other ready task, a loop iteration late for each message."""
    senders: list[asyncio.Task[Any] | None] = []

    class Recording(Peer):
        async def _send(self, data: bytes | str) -> None:
            senders.append(asyncio.current_task())
            await super()._send(data)

    socket = socket_on(Recording())
    await socket.send_bytes(b"audio")
    await socket.send_text("text")
    assert senders == [asyncio.current_task()] * 2
