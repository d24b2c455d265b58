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

from talkline.admission import AdmissionRefused, SessionRecord
from talkline.auth import TokenError
from talkline.history.recorder import SessionHistory
from talkline.lifecycle import EndReason
from talkline.resumption import Resumed, ResumeLink
from talkline.routes.deps import ServerState, server_state
from talkline.routes.resume import ResumeRefusedAtSocket, claim_resume
from talkline.session import Session

router = APIRouter()


def client_host(websocket: WebSocket) -> str:
    return websocket.client.host if websocket.client else "unknown"


class AccessRefused(Exception):
    """This connection may not open a session whatever the load (code 1008)."""


def access_check(websocket: WebSocket, state: ServerState) -> str | None:
    """The API key id the connection's token carries (None with access off); raises
    ``AccessRefused`` with the reason it may not connect."""
    origins, origin = state.settings.origin_list, websocket.headers.get("origin")
    # Browsers always send Origin; apps and scripts do not, and are held by the token.
    if origins and origin is not None and not is_origin_allowed(origin, origins):
        raise AccessRefused("origin not allowed")
    try:
        return state.access.check(websocket.query_params.get("token"))
    except TokenError as error:
        raise AccessRefused(str(error)) from None


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
    try:
        key_id = access_check(websocket, state)
    except AccessRefused as problem:
        await refuse(websocket, state, status.WS_1008_POLICY_VIOLATION, "access", str(problem))
        return
    try:
        resumed = await claim_resume(websocket, state)
    except ResumeRefusedAtSocket as refused:
        await refuse(websocket, state, refused.code, "resume", str(refused))
        return
    try:
        record = await admit(websocket, state, key_id, resumed)
    except AdmissionRefused as refused:
        decision = refused.decision
        await refuse(websocket, state, decision.ws_code, decision.refusal.label, decision.reason)
        return
    history = recorder(websocket, state, record.id)
    if history is not None and resumed is not None:
        assert state.history is not None
        conversation = resumed.conversation
        state.history.resumed(history, conversation.epoch, conversation.started)
    with logger.contextualize(session_id=record.id):
        await run_session(websocket, state, record, resumed, history)


async def admit(
    websocket: WebSocket, state: ServerState, key_id: str | None, resumed: Resumed | None
) -> SessionRecord:
    """A record for this socket's session; a resume keeps its conversation's id and key."""
    session_id = resumed.conversation.session_id if resumed else None
    if resumed:
        key_id = resumed.conversation.key_id or None
    return await state.admission.admit(client_host(websocket), key_id, session_id)


async def run_session(
    websocket: WebSocket,
    state: ServerState,
    record: SessionRecord,
    resumed: Resumed | None,
    history: SessionHistory | None,
) -> None:
    link = None
    if state.registry is not None:
        owner = state.settings.replica
        link = ResumeLink(state.registry, record.id, owner, record.key_id or "", resumed)
    resumable = False
    try:
        session = Session(
            record, websocket, state.session_options, state.pipelines, state.metrics, link, history
        )
        await session.run()
        resumable = await session.finish_resume()
    except Exception:
        logger.exception("session failed")
        record.end_reason = EndReason.INTERNAL_ERROR
        if history is not None:
            history.ended(record.end_reason.label, record.duration)
        with contextlib.suppress(RuntimeError):
            await websocket.close(EndReason.INTERNAL_ERROR.close_code, "internal error")
    finally:
        if resumable and state.registry is not None:
            logger.info(f"resumable for {state.registry.window:g} s")
            await state.admission.detach(record, state.registry.window)
        else:
            await state.admission.release(record)
