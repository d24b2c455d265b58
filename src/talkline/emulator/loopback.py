"""What every loopback server shares: start, stop, `async with`, its URL, waiting on records."""

from __future__ import annotations

import abc
import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Self

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response


@functools.cache
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


@dataclass(kw_only=True, eq=False)
class LoopbackServer(abc.ABC):
    """A server on `host`:`port` (port 0 picks a free one), used as `async with Fake() as fake:`.

    A subclass may be a keyword-only dataclass whose options are fields, readable and settable
    on the running server (the provider fakes are).
    """

    scheme: ClassVar[str]  # of `base_url`: "http", "https", "ws" ...
    base_path: ClassVar[str] = ""  # appended to `base_url`, e.g. "/v1"

    host: str = "127.0.0.1"
    port: int = 0
    recorder: Recorder = field(default_factory=Recorder, repr=False)

    @property
    def base_url(self) -> str:
        """`SCHEME://HOST:PORT` followed by `base_path`; the port is the bound one once started."""
        return f"{self.scheme}://{self.host}:{self.port}{self.base_path}"

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
    """A `LoopbackServer` serving one websockets `Server`.

    A subclass names its `server_header`, answers the handshake in `_check_request` and each
    accepted connection in `_handle`, and may add `serve` arguments in `_serve_options`.
    Its websockets logger drops DEBUG lines (see `quiet_websockets_logger`).
    """

    scheme = "ws"
    server_header: ClassVar[str]  # the `Server` header of every handshake answer

    _server: Server | None = None

    def _serve_options(self) -> dict[str, Any]:
        """More keyword arguments for websockets' `serve`: `ssl`, `max_size` ..."""
        return {}

    @abc.abstractmethod
    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Answer the handshake with a refusal, or None to accept it."""

    @abc.abstractmethod
    async def _handle(self, ws: ServerConnection) -> None:
        """Serve one accepted connection until it closes."""

    async def _listen(self) -> int:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._check_request,
            server_header=self.server_header,
            logger=quiet_websockets_logger(type(self).__module__),
            **self._serve_options(),
        )
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _close(self) -> None:
        """Close every connection (1001) and stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
