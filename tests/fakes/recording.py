"""What the fakes share: the key they let in, what they record and how they redact it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
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


@dataclass(kw_only=True, eq=False)
class KeyCheck:
    """A fake's `api_key` option: the only key let in; None lets in any non-empty key."""

    api_key: str | None = field(default="test-key", repr=False)

    def accepts(self, key: str | None) -> bool:
        """Whether a client sending `key` is let in."""
        return bool(key) and self.api_key in (None, key)


@dataclass(kw_only=True)
class WebSocketRecord:
    """One WebSocket handshake and, when accepted, the messages that crossed it."""

    index: int
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    key_accepted: bool
    messages: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str | None = None

    @property
    def params(self) -> dict[str, str]:
        """Query parameters, one value each."""
        return flat_query(self.query)
