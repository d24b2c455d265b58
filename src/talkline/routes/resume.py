"""Resume at the doors: ``POST /connect {"resume": secret}`` checks the secret and hands out a
token that carries the claim; ``/ws`` with that token claims the conversation (epoch + 1)
and closes any connection of it still open here. The secret is never logged."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request, WebSocket
from fastapi.responses import JSONResponse
from loguru import logger
from starlette import status

from talkline.admission import Refusal
from talkline.auth import TokenError
from talkline.coordinator.resume import ResumeRefused, new_secret, secret_hash
from talkline.resumption import Resumed
from talkline.routes.deps import ServerState

FENCE_WAIT_SECS = 10.0
NOT_NOW = (Refusal.STARTING, Refusal.START_FAILED, Refusal.SHUTTING_DOWN)


class ResumeRefusedAtSocket(Exception):
    """A resume token that cannot open the conversation; ``code`` is the close code."""

    def __init__(self, reason: str, code: int = status.WS_1008_POLICY_VIOLATION):
        super().__init__(reason)
        self.code = code


async def resume_of(request: Request) -> str | None:
    """The ``resume`` secret of a JSON body, if there is one."""
    if "json" not in request.headers.get("content-type", ""):
        return None
    try:
        body: Any = await request.json()
    except ValueError:
        return None
    secret = body.get("resume") if isinstance(body, dict) else None
    return secret if isinstance(secret, str) and secret else None


def problem(status_code: int, label: str, words: str) -> JSONResponse:
    return JSONResponse({"error": words, "refusal": label}, status_code=status_code)


async def connect_resume(
    state: ServerState, secret: str, key_id: str, ws_url: str
) -> dict[str, str] | JSONResponse:
    """``/connect``'s answer to a resume: a claim token, 410 (window over) or 403."""
    if state.registry is None:
        return problem(410, "resume-off", "resume is turned off on this server")
    decision = state.admission.decide()
    if decision is not None and decision.refusal in NOT_NOW:
        return problem(decision.http_status, decision.refusal.label, decision.reason)
    try:
        conversation = await state.registry.check(secret, key_id)
    except ResumeRefused as refused:
        words = refused.problem.words
        return problem(refused.problem.http_status, refused.problem.label, words)
    except Exception as error:  # the registry is unreachable
        logger.warning(f"resume registry unreachable: {error!r}")
        return problem(503, "resume-unavailable", "resume is unavailable: try again soon")
    token = state.access.resume_token(key_id, conversation.session_id, conversation.epoch)
    return {"ws_url": ws_url, "token": token}


async def claim_resume(websocket: WebSocket, state: ServerState) -> Resumed | None:
    """The conversation a resume token claims for this socket, or None (a new session)."""
    if state.registry is None:
        return None
    try:
        claim = state.access.resume_claim(websocket.query_params.get("token"))
    except TokenError as error:
        raise ResumeRefusedAtSocket(str(error)) from None
    if claim is None:
        return None
    session_id, epoch, _key_id = claim
    secret = new_secret(session_id)  # the secret rotates with every resume
    try:
        conversation = await state.registry.claim(
            session_id, epoch, state.settings.replica, secret_hash(secret)
        )
    except ResumeRefused as refused:
        raise ResumeRefusedAtSocket(refused.problem.words) from None
    except Exception as error:
        logger.warning(f"resume registry unreachable: {error!r}")
        raise ResumeRefusedAtSocket(
            "resume unavailable: try again soon", status.WS_1013_TRY_AGAIN_LATER
        ) from None
    await fence_here(state, session_id)
    logger.info(f"session {session_id} resumed on {state.settings.replica} (epoch {epoch + 1})")
    return Resumed(conversation, secret)


async def fence_here(state: ServerState, session_id: str) -> None:
    """Close this conversation's old connection if it is still open in this process, and
    wait until it has let go of its upstream: never two upstream connections for one."""
    record = state.admission.live.get(session_id)  # detached sessions are not live
    if record is None or record.fence is None:
        return
    record.fence()
    try:
        await asyncio.wait_for(record.finished.wait(), FENCE_WAIT_SECS)
    except TimeoutError:
        logger.warning("the old connection did not close in time")
