"""Helpers for recording what a fake received: redacted headers and parsed request targets."""

from __future__ import annotations

from collections.abc import Iterable
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
