"""POST /connect and /ready against the global slots, in-process (no models, no sockets).

The app is built by ``create_app`` and called through httpx's ASGI transport; its shared
resources stand in as ready, since admission is all these tests look at.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from talkline.app import create_app
from talkline.config import Settings
from talkline.sessions import AdmissionRefused, SessionManager

CAP = 3


def worker_app(slots_dir: Path) -> FastAPI:
    """One worker's app, sharing the global cap in ``slots_dir``, its models standing in."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, brain="local", max_sessions=CAP, slots_dir=slots_dir
    )
    app = create_app(settings)
    app.state.shared.ready.set()
    return app


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    return worker_app(tmp_path / "slots")


@pytest.fixture
async def worker(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(app) as http:
        yield http


def client_of(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://talkline")


async def test_many_connects_leave_every_slot_free(app: FastAPI, worker: httpx.AsyncClient) -> None:
    """POST /connect only asks; after many, all ``max_sessions`` sessions are admitted."""
    for _ in range(CAP * 10):
        reply = await worker.post("/connect", json={})
        assert reply.status_code == 200, reply.text
    manager: SessionManager = app.state.sessions
    records = [manager.admit(f"10.0.0.{index}") for index in range(CAP)]
    assert all(record.slot is not None for record in records)


async def test_connect_says_full_while_every_slot_is_held_then_recovers(
    app: FastAPI, worker: httpx.AsyncClient
) -> None:
    manager: SessionManager = app.state.sessions
    records = [manager.admit("10.0.0.1") for _ in range(CAP)]
    for _ in range(5):
        reply = await worker.post("/connect", json={})
        assert reply.status_code == 503 and "server full" in reply.json()["error"]
        assert reply.headers["retry-after"] == "5"
    assert (await worker.get("/ready")).json() == {"ready": False, "reason": "full"}
    manager.release(records[0])
    assert (await worker.post("/connect", json={})).status_code == 200
    assert manager.admit("10.0.0.2").slot is not None


async def test_workers_share_the_cap(tmp_path: Path) -> None:
    """Sessions on one worker fill the cap for another worker on the same slots."""
    first, second = worker_app(tmp_path), worker_app(tmp_path)
    held = [first.state.sessions.admit("10.0.0.1") for _ in range(CAP)]
    async with client_of(second) as http:
        reply = await http.post("/connect", json={})
        assert reply.status_code == 503 and "server full" in reply.json()["error"]
        with pytest.raises(AdmissionRefused):
            second.state.sessions.admit("10.0.0.2")
        first.state.sessions.release(held[0])
        assert (await http.post("/connect", json={})).status_code == 200
        assert second.state.sessions.admit("10.0.0.2").slot is not None


async def test_connect_before_the_models_are_loaded_is_503_starting(app: FastAPI) -> None:
    app.state.shared.ready.clear()
    async with client_of(app) as http:
        reply = await http.post("/connect", json={})
    assert reply.status_code == 503 and reply.json() == {"error": "server starting"}
