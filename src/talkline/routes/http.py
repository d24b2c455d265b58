"""HTTP routes: /connect for RTVI clients, /health and /ready for orchestrators."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from talkline.auth import bearer
from talkline.routes.deps import AccessRules, AppSettings, Manager, Shared
from talkline.session import describe_brain

router = APIRouter()


def websocket_url(request: Request, public_url: str | None) -> str:
    """Where a client that reached us at ``request`` should open /ws."""
    base = public_url.rstrip("/") if public_url else str(request.base_url).rstrip("/")
    scheme, _, rest = base.partition("://")
    ws_scheme = "wss" if scheme in ("https", "wss") else "ws"
    return f"{ws_scheme}://{rest}/ws"


@router.post("/connect", response_model=None)
async def connect(
    request: Request, settings: AppSettings, sessions: Manager, shared: Shared, access: AccessRules
) -> dict[str, str] | JSONResponse:
    """The reply ``PipecatClient.startBotAndConnect`` expects: only ``ws_url`` (and a token).

    With access control on, it takes ``Authorization: Bearer <API key>`` and returns a
    short-lived token for /ws. A server that would refuse the session says so here already,
    with 503 and the reason.
    """
    reply = {"ws_url": websocket_url(request, settings.public_url)}
    if access.enabled:
        key_id = access.key_id(bearer(request.headers.get("authorization")) or "")
        if key_id is None:
            return JSONResponse(
                {"error": "an API key is required: Authorization: Bearer <key>"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        reply["token"] = access.token_for(key_id)
    refusal = sessions.refusal() or (None if shared.ready.is_set() else "server starting")
    if refusal:
        return JSONResponse({"error": refusal}, status_code=503, headers={"Retry-After": "5"})
    return reply


@router.get("/health")
async def health(settings: AppSettings, sessions: Manager) -> dict[str, object]:
    """Liveness: the process answers. Also says what it runs."""
    return {
        "status": "ok",
        **describe_brain(settings),
        "sessions": len(sessions),
        "max_sessions": sessions.max_sessions,
    }


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/ready")
async def ready(shared: Shared, sessions: Manager) -> JSONResponse:
    """Readiness: models loaded, Piper answering, not draining, not full."""
    if shared.failure:
        return JSONResponse({"ready": False, "reason": shared.failure}, status_code=503)
    if not shared.ready.is_set():
        return JSONResponse({"ready": False, "reason": "starting"}, status_code=503)
    if sessions.draining:
        return JSONResponse({"ready": False, "reason": "shutting down"}, status_code=503)
    if len(sessions) >= sessions.max_sessions:
        return JSONResponse({"ready": False, "reason": "full"}, status_code=503)
    return JSONResponse({"ready": True, "sessions": len(sessions)})
