"""WS /ws: origin and token checks, the admission decision, then one session per connection.

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
from talkline.history.recorder import SessionHistory
from talkline.lifecycle import EndReason
from talkline.routes.deps import ServerState, server_state
from talkline.session import Session

router = APIRouter()


def client_host(websocket: WebSocket) -> str:
    return websocket.client.host if websocket.client else "unknown"


def access_refusal(websocket: WebSocket, state: ServerState) -> str | None:
    """Why this connection may not open a session whatever the load (code 1008), or None."""
    origins, origin = state.settings.origin_list, websocket.headers.get("origin")
    # Browsers always send Origin; apps and scripts do not, and are held by the token.
    if origins and origin is not None and not is_origin_allowed(origin, origins):
        return "origin not allowed"
    try:
        state.access.check(websocket.query_params.get("token"))
    except TokenError as error:
        return str(error)
    return None


async def refuse(websocket: WebSocket, state: ServerState, code: int, label: str, reason: str):
    logger.warning(f"refused {client_host(websocket)}: {reason}")
    state.metrics.refused.labels(label).inc()
    await websocket.close(code, reason)


def recorder(websocket: WebSocket, state: ServerState, session_id: str) -> SessionHistory | None:
    """The session's history recorder, if history is on."""
    if state.history is None:
        return None
    return state.history.recorder(
        session_id,
        client_host(websocket),
        state.session_options.about,
        state.access.subject(websocket.query_params.get("token")),
    )


@router.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    state = server_state(websocket.app)
    await websocket.accept()
    if problem := access_refusal(websocket, state):
        await refuse(websocket, state, status.WS_1008_POLICY_VIOLATION, "access", problem)
        return
    try:
        record = state.admission.admit(client_host(websocket))
    except AdmissionRefused as refused:
        decision = refused.decision
        await refuse(websocket, state, decision.ws_code, decision.refusal.label, decision.reason)
        return
    history = recorder(websocket, state, record.id)
    with logger.contextualize(session_id=record.id):
        try:
            session = Session(
                record,
                websocket,
                state.session_options,
                state.pipelines,
                state.metrics,
                history=history,
            )
            await session.run()
        except Exception:
            logger.exception("session failed")
            record.end_reason = EndReason.INTERNAL_ERROR
            if history is not None:
                history.ended(record.end_reason.label, record.duration)
            with contextlib.suppress(RuntimeError):
                await websocket.close(EndReason.INTERNAL_ERROR.close_code, "internal error")
        finally:
            state.admission.release(record)
