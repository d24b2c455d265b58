"""GET /sessions and GET /sessions/{id}: the history as JSON, for operators.

With access control on, they take an API key (``Authorization: Bearer <key>``), like
/connect; with it off, they answer only clients on this machine (loopback), so an open
server does not publish what its users said.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError

from talkline.auth import bearer
from talkline.history import History
from talkline.lifecycle import END_REASON_LABELS
from talkline.routes.deps import State

router = APIRouter(tags=["history"])
LIVE = "live"  # the end_reason filter for sessions not ended


class Turn(BaseModel):
    """One turn of a transcript."""

    seq: int
    role: str = Field(description='"user" or "bot"')
    at: datetime = Field(description="When the turn began (UTC)")
    text: str
    interrupted: bool = Field(description="The user cut the bot off (bot turns)")
    latency_ms: float | None = Field(
        description="Bot turns: end of the user's speech to the bot's first audio"
    )


class SessionSummary(BaseModel):
    """One session's record."""

    id: str
    replica: str
    started_at: datetime
    ended_at: datetime | None = Field(description="Null while the session is live")
    duration_secs: float | None
    end_reason: str | None = Field(description="The label the client was told; null while live")
    brain: str
    about: dict[str, str] = Field(description="The brain and stages, as bot-ready said")
    api_key_id: str | None = Field(description="Which API key opened it (an id, never the key)")
    client: str = Field(description="The client's address")
    turns: int = Field(description="Bot answers")
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    upstream_reconnects: int
    resumes: int
    llm_tokens: int
    bad_inputs: int


class SessionDetail(SessionSummary):
    """One session's record with its transcript (empty when transcripts are off)."""

    transcript: list[Turn]


class SessionPage(BaseModel):
    """Sessions, newest first."""

    sessions: list[SessionSummary]
    total: int = Field(description="Sessions matching the filters")
    offset: int
    next_offset: int | None = Field(description="The offset of the next page, if any")


def utc(moment: datetime | None) -> datetime | None:
    """A stored (naive UTC) time with its zone."""
    return None if moment is None else moment.replace(tzinfo=UTC)


def stored(moment: datetime) -> datetime:
    """A time as the history stores it: naive UTC."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def summary_fields(row: dict[str, Any]) -> dict[str, Any]:
    return row | {"started_at": utc(row["started_at"]), "ended_at": utc(row["ended_at"])}


def is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def history_access(request: Request, state: State) -> History:
    """The history, if this request may read it."""
    if state.access.enabled:
        key = bearer(request.headers.get("authorization")) or ""
        if state.access.key_id(key) is None:
            raise HTTPException(
                401,
                "an API key is required: Authorization: Bearer <key>",
                headers={"WWW-Authenticate": "Bearer"},
            )
    elif not is_loopback(request.client.host if request.client else None):
        raise HTTPException(403, "session history answers only on loopback when access is off")
    if state.history is None:
        raise HTTPException(404, "session history is off (TALKLINE_HISTORY=false)")
    return state.history


Readable = Annotated[History, Depends(history_access)]


def unavailable(error: Exception) -> HTTPException:
    return HTTPException(503, f"the history database is unavailable ({type(error).__name__})")


@router.get("/sessions", response_model=SessionPage)
async def list_sessions(
    history: Readable,
    since: Annotated[datetime | None, Query(description="Sessions started at or after")] = None,
    end_reason: Annotated[
        str | None, Query(description=f"One of {', '.join(END_REASON_LABELS)}, or {LIVE}")
    ] = None,
    replica: Annotated[str | None, Query(description="Only this replica's sessions")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> SessionPage:
    """Sessions, newest first."""
    if end_reason is not None and end_reason not in (*END_REASON_LABELS, LIVE):
        raise HTTPException(
            422, f"unknown end_reason {end_reason!r}: one of {', '.join(END_REASON_LABELS)}, {LIVE}"
        )
    try:
        rows, total = await history.store.list_sessions(
            since=stored(since) if since else None,
            end_reason=end_reason,
            replica=replica,
            limit=limit,
            offset=offset,
        )
    except (DBAPIError, OSError) as error:
        raise unavailable(error) from None
    following = offset + len(rows)
    return SessionPage(
        sessions=[SessionSummary(**summary_fields(row)) for row in rows],
        total=total,
        offset=offset,
        next_offset=following if following < total else None,
    )


@router.get("/sessions/{session_id}", response_model=SessionDetail)
async def get_session(session_id: str, history: Readable) -> SessionDetail:
    """One session's record and transcript."""
    try:
        found = await history.store.get_session(session_id)
    except (DBAPIError, OSError) as error:
        raise unavailable(error) from None
    if found is None:
        raise HTTPException(404, f"no session {session_id!r} in the history")
    row, said = found
    transcript = [Turn(**(turn | {"at": utc(turn["at"])})) for turn in said]
    return SessionDetail(**summary_fields(row), transcript=transcript)
