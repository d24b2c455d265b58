"""HTTP routes: /connect for RTVI clients, /health and /ready for orchestrators."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from talkline.auth import bearer
from talkline.routes.deps import State
from talkline.routes.resume import connect_resume, resume_of

router = APIRouter()
RETRY_AFTER_SECS = "5"


def websocket_url(request: Request, public_url: str | None) -> str:
    """Where a client that reached us at ``request`` should open /ws."""
    base = public_url.rstrip("/") if public_url else str(request.base_url).rstrip("/")
    scheme, _, rest = base.partition("://")
    ws_scheme = "wss" if scheme in ("https", "wss") else "ws"
    return f"{ws_scheme}://{rest}/ws"


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.post("/connect", response_model=None)
async def connect(request: Request, state: State) -> dict[str, str] | JSONResponse:
    """The reply ``PipecatClient.startBotAndConnect`` expects: only ``ws_url`` (and a token).

    With ``{"resume": "<secret>"}`` as JSON body, the token carries a resume claim (see
    ``routes/resume.py``): 410 when the window is over, 403 for a wrong secret or key.

    With access control on, it takes ``Authorization: Bearer <API key>`` and returns a
    short-lived token for /ws. A server that would refuse the session says so here already,
    with the admission decision's HTTP status and reason.
    """
    reply = {"ws_url": websocket_url(request, state.settings.public_url)}
    access, key_id = state.access, None
    if access.enabled:
        key_id = access.key_id(bearer(request.headers.get("authorization")) or "")
        if key_id is None:
            return JSONResponse(
                {"error": "an API key is required: Authorization: Bearer <key>"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        reply["token"] = access.token_for(key_id)
    if secret := await resume_of(request):
        return await connect_resume(state, secret, key_id or "", reply["ws_url"])
    if decision := state.admission.decide(client_address(request), key_id):
        return JSONResponse(
            {"error": decision.reason, "refusal": decision.refusal.label},
            status_code=decision.http_status,
            headers={"Retry-After": RETRY_AFTER_SECS},
        )
    return reply


@router.get("/health")
async def health(state: State) -> dict[str, object]:
    """Liveness: the process answers. Also says what it runs."""
    return {
        "status": "ok",
        "replica": state.settings.replica,
        **state.settings.about(),
        "sessions": len(state.admission),
        "max_sessions": state.admission.max_sessions,
        "coordinator": state.admission.coordinator.name,
        "sessions_counted": state.admission.coordinator.counted(),
        "resume": "off" if state.registry is None else state.registry.name,
    }


@router.get("/metrics")
async def metrics(state: State) -> Response:
    """Prometheus text format."""
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/ready")
async def ready(state: State) -> JSONResponse:
    """Readiness: the answer a new session would get from admission, as HTTP."""
    if decision := state.admission.decide(probe=True):
        return JSONResponse(
            {"ready": False, "reason": decision.reason, "refusal": decision.refusal.label},
            status_code=decision.http_status,
        )
    return JSONResponse({"ready": True, "sessions": len(state.admission)})
