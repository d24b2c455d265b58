"""What the routes share: the typed state ``create_app`` puts on ``app.state.talkline``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from talkline.admission import Admission
from talkline.auth import Access
from talkline.config import Settings
from talkline.coordinator.resume import ResumeRegistry
from talkline.history.service import History
from talkline.metrics import Metrics
from talkline.pipelines.build import PipelineFactory
from talkline.resources import SharedResources
from talkline.session import SessionOptions


@dataclass
class ServerState:
    """One app's settings and the components built from them."""

    settings: Settings
    access: Access
    admission: Admission
    shared: SharedResources
    metrics: Metrics
    session_options: SessionOptions
    pipelines: PipelineFactory
    registry: ResumeRegistry | None = None  # None: resume is off
    history: History | None = None  # None: TALKLINE_HISTORY=false


def server_state(app: FastAPI) -> ServerState:
    state: ServerState = app.state.talkline
    return state


def get_state(request: Request) -> ServerState:
    return server_state(request.app)


State = Annotated[ServerState, Depends(get_state)]
