"""WS /ws: admission, then one session per connection."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, WebSocket
from loguru import logger
from starlette import status

from talkline.session import Session
from talkline.sessions import AdmissionRefused

router = APIRouter()


def client_address(websocket: WebSocket) -> str:
    return f"{websocket.client.host}:{websocket.client.port}" if websocket.client else "unknown"


@router.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    state = websocket.app.state
    await websocket.accept()
    if not state.shared.ready.is_set():
        await websocket.close(status.WS_1013_TRY_AGAIN_LATER, "server starting: try again soon")
        return
    try:
        record = state.sessions.admit(client_address(websocket))
    except AdmissionRefused as refused:
        logger.warning(f"refused {client_address(websocket)}: {refused.reason}")
        await websocket.close(status.WS_1013_TRY_AGAIN_LATER, refused.reason)
        return
    with logger.contextualize(session_id=record.id):
        try:
            await Session(record, websocket, state.settings, state.shared).run()
        except Exception:
            logger.exception("session failed")
            with contextlib.suppress(RuntimeError):
                await websocket.close(status.WS_1011_INTERNAL_ERROR, "internal error")
        finally:
            state.sessions.release(record)
