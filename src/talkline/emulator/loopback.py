"""What every loopback fake shares: start, stop, `async with`, and waiting on its records."""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Self

from websockets.asyncio.server import Server


def quiet_websockets_logger(name: str) -> logging.Logger:
    """A logger for a websockets server that drops DEBUG lines, which carry API keys."""
    ws_logger = logging.getLogger(f"{name}.websockets")
    ws_logger.addFilter(lambda record: record.levelno >= logging.INFO)
    return ws_logger


class Recorder:
    """Wakes waiters on a fake's records; call `changed()` after every change."""

    def __init__(self) -> None:
        self._changed = asyncio.Condition()

    async def changed(self) -> None:
        """Re-check every waiter's condition."""
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], within: float = 5.0) -> None:
        """Wait until `predicate()` holds; raise TimeoutError after `within` seconds."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(predicate)


class LoopbackServer(abc.ABC):
    """A server on `host`:`port` (port 0 picks a free one), used as `async with Fake() as fake:`."""

    def __init__(self, *, host: str, port: int, recorder: Recorder | None = None) -> None:
        self.host = host
        self.port = port
        self.recorder = recorder or Recorder()

    async def start(self) -> None:
        """Start listening; `port` becomes the port actually bound."""
        self.port = await self._listen()

    async def stop(self) -> None:
        """Close every connection and stop listening; connecting is then refused."""
        await self._close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def wait_for(self, predicate: Callable[[], bool], within: float = 5.0) -> None:
        """Wait until `predicate()` holds, re-checked after every recorded event.

        Raises TimeoutError when it does not hold within `within` seconds.
        """
        await self.recorder.wait_for(predicate, within)

    @abc.abstractmethod
    async def _listen(self) -> int:
        """Start serving on `host`:`port`; return the port bound."""

    @abc.abstractmethod
    async def _close(self) -> None:
        """Stop serving; do nothing when not serving."""


class WebSocketServer(LoopbackServer):
    """A `LoopbackServer` whose websockets `Server` is made by `_serve`."""

    _server: Server | None = None

    @abc.abstractmethod
    async def _serve(self) -> Server:
        """Start the websockets server on `host`:`port`."""

    async def _listen(self) -> int:
        self._server = await self._serve()
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _close(self) -> None:
        """Close every connection (1001) and stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
