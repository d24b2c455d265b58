"""WS /ws: origin, token and admission checks, then one session per connection.

Every refusal accepts the socket and closes it with a named code and a reason, so browsers
(which see only 1006 for a refused handshake) can tell the user why. Nothing is built for a
refused connection: no pipeline, no upstream connection.
"""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, WebSocket
from loguru import logger
from pipecat.utils.security.allowed_origins import is_origin_allowed
from starlette import status

from talkline.admission import AdmissionRefused
from talkline.auth import TokenError
from talkline.session import Session

router = APIRouter()


def client_host(websocket: WebSocket) -> str:
    return websocket.client.host if websocket.client else "unknown"


def refusal(websocket: WebSocket) -> tuple[int, str] | None:
    """The close code and reason for a connection that may not start a session."""
    state = websocket.app.state
    origins, origin = state.settings.origin_list, websocket.headers.get("origin")
    # Browsers always send Origin; apps and scripts do not, and are held by the token.
    if origins and origin is not None and not is_origin_allowed(origin, origins):
        return status.WS_1008_POLICY_VIOLATION, "origin not allowed"
    try:
        state.access.check(websocket.query_params.get("token"))
    except TokenError as error:
        return status.WS_1008_POLICY_VIOLATION, str(error)
    if not state.shared.ready.is_set():
        return status.WS_1013_TRY_AGAIN_LATER, "server starting: try again soon"
    return None


async def refuse(websocket: WebSocket, code: int, reason: str) -> None:
    logger.warning(f"refused {client_host(websocket)}: {reason}")
    websocket.app.state.metrics.refused.labels(reason.partition(":")[0]).inc()
    await websocket.close(code, reason)


@router.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    state = websocket.app.state
    await websocket.accept()
    host = client_host(websocket)
    if refused := refusal(websocket):
        await refuse(websocket, *refused)
        return
    try:
        record = state.sessions.admit(host)
    except AdmissionRefused as error:
        await refuse(websocket, status.WS_1013_TRY_AGAIN_LATER, error.reason)
        return
    with logger.contextualize(session_id=record.id):
        try:
            await Session(record, websocket, state.settings, state.shared, state.metrics).run()
        except Exception:
            logger.exception("session failed")
            with contextlib.suppress(RuntimeError):
                await websocket.close(status.WS_1011_INTERNAL_ERROR, "internal error")
        finally:
            state.sessions.release(record)
