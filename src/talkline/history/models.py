"""The history as it is read: pydantic models for the API's JSON and the CLI."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from talkline.history.store import HistoryStore
from talkline.lifecycle import END_REASON_LABELS

LIVE = "live"  # the end_reason filter for sessions not ended
FILTERS = (*END_REASON_LABELS, LIVE)


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


def session_detail(row: dict[str, Any], said: list[dict[str, Any]]) -> SessionDetail:
    transcript = [Turn(**(turn | {"at": utc(turn["at"])})) for turn in said]
    return SessionDetail(**summary_fields(row), transcript=transcript)


class UnknownEndReason(ValueError):
    """An end_reason filter that names no end reason."""

    def __init__(self, given: str):
        super().__init__(f"unknown end_reason {given!r}: one of {', '.join(FILTERS)}")


async def read_page(
    store: HistoryStore,
    *,
    since: datetime | None = None,
    end_reason: str | None = None,
    replica: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> SessionPage:
    """One page of sessions, newest first, as /sessions and ``talkline sessions`` show it."""
    if end_reason is not None and end_reason not in FILTERS:
        raise UnknownEndReason(end_reason)
    rows, total = await store.list_sessions(
        since=stored(since) if since else None,
        end_reason=end_reason,
        replica=replica,
        limit=limit,
        offset=offset,
    )
    following = offset + len(rows)
    return SessionPage(
        sessions=[SessionSummary(**summary_fields(row)) for row in rows],
        total=total,
        offset=offset,
        next_offset=following if following < total else None,
    )


async def read_session(store: HistoryStore, session_id: str) -> SessionDetail | None:
    found = await store.get_session(session_id)
    return None if found is None else session_detail(*found)
