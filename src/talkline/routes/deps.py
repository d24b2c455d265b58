"""Dependencies shared by the HTTP routes: the objects ``create_app`` put on ``app.state``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from talkline.admission import SessionManager
from talkline.auth import Access
from talkline.config import Settings
from talkline.resources import SharedResources


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_manager(request: Request) -> SessionManager:
    return request.app.state.sessions


def get_shared(request: Request) -> SharedResources:
    return request.app.state.shared


def get_access(request: Request) -> Access:
    return request.app.state.access


AppSettings = Annotated[Settings, Depends(get_app_settings)]
Manager = Annotated[SessionManager, Depends(get_manager)]
Shared = Annotated[SharedResources, Depends(get_shared)]
AccessRules = Annotated[Access, Depends(get_access)]
