"""GET /sessions and GET /sessions/{id}: the history as JSON, for operators.

With access control on, they take an API key (``Authorization: Bearer <key>``), like
/connect; with it off, they answer only clients on this machine (loopback), so an open
server does not publish what its users said.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from sqlalchemy.exc import DBAPIError

from talkline.auth import bearer
from talkline.history.models import (
    FILTERS,
    SessionDetail,
    SessionPage,
    UnknownEndReason,
    read_page,
    read_session,
)
from talkline.history.service import History
from talkline.routes.deps import State

router = APIRouter(tags=["history"])


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
        str | None, Query(description=f"One of {', '.join(FILTERS)} (not ended yet)")
    ] = None,
    replica: Annotated[str | None, Query(description="Only this replica's sessions")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> SessionPage:
    """Sessions, newest first."""
    try:
        return await read_page(
            history.store,
            since=since,
            end_reason=end_reason,
            replica=replica,
            limit=limit,
            offset=offset,
        )
    except UnknownEndReason as error:
        raise HTTPException(422, str(error)) from None
    except (DBAPIError, OSError) as error:
        raise unavailable(error) from None


@router.get("/sessions/{session_id}", response_model=SessionDetail)
async def get_session(session_id: str, history: Readable) -> SessionDetail:
    """One session's record and transcript."""
    try:
        found = await read_session(history.store, session_id)
    except (DBAPIError, OSError) as error:
        raise unavailable(error) from None
    if found is None:
        raise HTTPException(404, f"no session {session_id!r} in the history")
    return found
