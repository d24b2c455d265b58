"""Test support for the session history: reading it over HTTP and waiting for its rows."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from talkline.history.store import utcnow
from tests.support import ServerThread

WRITE_TIMEOUT = 60.0  # generous: the writer batches, and the machine may be busy


async def read_session(
    base_url: str, session_id: str, *, headers: dict[str, str] | None = None
) -> dict[str, Any] | None:
    async with httpx.AsyncClient(base_url=base_url, headers=headers) as http:
        reply = await http.get(f"/sessions/{session_id}")
    if reply.status_code == 404:
        return None
    reply.raise_for_status()
    found: dict[str, Any] = reply.json()
    return found


async def wait_for_session(
    base_url: str,
    session_id: str,
    *,
    ended: bool = True,
    turns: int = 0,
    headers: dict[str, str] | None = None,
    timeout: float = WRITE_TIMEOUT,
) -> dict[str, Any]:
    """The session as /sessions/{id} shows it, once it has ended (if ``ended``) and holds
    ``turns`` transcript turns."""
    deadline = time.monotonic() + timeout
    found: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        found = await read_session(base_url, session_id, headers=headers)
        if (
            found is not None
            and (found["ended_at"] is not None or not ended)
            and len(found["transcript"]) >= turns
        ):
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"session {session_id} not written as expected: {found}")


def session_row(session_id: str, replica: str = "r1", **changes: Any) -> dict[str, Any]:
    row = {
        "id": session_id, "replica": replica, "started_at": utcnow(), "ended_at": None,
        "duration_secs": None, "end_reason": None, "brain": "local", "about": {"brain": "local"},
        "api_key_id": None, "client": "127.0.0.1", "turns": 0, "latency_p50_ms": None,
        "latency_p95_ms": None, "upstream_reconnects": 0, "resumes": 0, "llm_tokens": 0,
        "bad_inputs": 0,
    }  # fmt: skip
    return row | changes


def turn_row(session_id: str, seq: int, text: str) -> dict[str, Any]:
    return {"session_id": session_id, "seq": seq, "role": "user", "at": utcnow(),
            "text": text, "interrupted": False, "latency_ms": None}  # fmt: skip


def write(
    server: ServerThread, *rows: dict[str, Any], turns: tuple[dict[str, Any], ...] = ()
) -> None:
    """Rows through the server's own writer, waiting until they are in the database."""
    history = server.state.history
    assert history is not None

    async def put() -> None:
        await history.writer.ready.wait()
        for row in rows:
            history.writer.put_session(row)
        for turn in turns:
            history.writer.put_turn(turn)
        await history.writer.flushed()

    server.call(put())
