"""What a fake received, kept for assertions, and a way to wait until something arrives."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from urllib.parse import parse_qs, urlsplit

# Headers whose values are credentials: recorded as `<redacted>`, never stored or logged.
SECRET_HEADERS = frozenset(
    {"authorization", "xi-api-key", "x-api-key", "api-key", "sec-websocket-protocol", "cookie"}
)
REDACTED = "<redacted>"


def safe_headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Request headers, lower-cased, with credential values replaced by `<redacted>`."""
    return {
        name.lower(): REDACTED if name.lower() in SECRET_HEADERS else value for name, value in items
    }


def split_target(target: str) -> tuple[str, dict[str, list[str]]]:
    """Path and query parameters (every value, in order) of a request target."""
    parts = urlsplit(target)
    return parts.path, parse_qs(parts.query, keep_blank_values=True)


def flat_query(query: dict[str, list[str]]) -> dict[str, str]:
    """The last value of each query parameter."""
    return {name: values[-1] for name, values in query.items()}


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
