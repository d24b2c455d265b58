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

from talkline.admission import Admission, AdmissionRefused
from talkline.app import create_app
from talkline.routes.deps import server_state
from tests.support import StandInResources, in_process, local_settings

CAP = 3


def worker_app(slots_dir: Path) -> FastAPI:
    """One worker's app, sharing the global cap in ``slots_dir``, its models standing in."""
    return create_app(local_settings(max_sessions=CAP, slots_dir=slots_dir), StandInResources())


def admission(app: FastAPI) -> Admission:
    return server_state(app).admission


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    return worker_app(tmp_path / "slots")


@pytest.fixture
async def worker(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(app) as http:
        yield http


async def test_many_connects_leave_every_slot_free(app: FastAPI, worker: httpx.AsyncClient) -> None:
    """POST /connect only asks; after many, all ``max_sessions`` sessions are admitted."""
    for _ in range(CAP * 10):
        reply = await worker.post("/connect", json={})
        assert reply.status_code == 200, reply.text
    manager = admission(app)
    records = [await manager.admit(f"10.0.0.{index}") for index in range(CAP)]
    assert all(record.slot is not None for record in records)


async def test_connect_says_full_while_every_slot_is_held_then_recovers(
    app: FastAPI, worker: httpx.AsyncClient
) -> None:
    manager = admission(app)
    records = [await manager.admit("10.0.0.1") for _ in range(CAP)]
    for _ in range(5):
        reply = await worker.post("/connect", json={})
        assert reply.status_code == 503 and "server full" in reply.json()["error"]
        assert reply.headers["retry-after"] == "5"
    ready = await worker.get("/ready")
    assert ready.status_code == 503 and ready.json()["refusal"] == "server-full"
    await manager.release(records[0])
    assert (await worker.post("/connect", json={})).status_code == 200
    assert (await manager.admit("10.0.0.2")).slot is not None


async def test_workers_share_the_cap(tmp_path: Path) -> None:
    """Sessions on one worker fill the cap for another worker on the same slots."""
    first, second = worker_app(tmp_path), worker_app(tmp_path)
    held = [await admission(first).admit("10.0.0.1") for _ in range(CAP)]
    async with in_process(second) as http:
        reply = await http.post("/connect", json={})
        assert reply.status_code == 503 and "server full" in reply.json()["error"]
        with pytest.raises(AdmissionRefused):
            await admission(second).admit("10.0.0.2")
        await admission(first).release(held[0])
        assert (await http.post("/connect", json={})).status_code == 200
        assert (await admission(second).admit("10.0.0.2")).slot is not None


async def test_connect_before_the_models_are_loaded_is_503_starting(tmp_path: Path) -> None:
    settings = local_settings(max_sessions=CAP, slots_dir=tmp_path)
    app = create_app(settings, StandInResources(ready=False))
    async with in_process(app) as http:
        reply = await http.post("/connect", json={})
    assert reply.status_code == 503
    assert reply.json() == {
        "error": "server starting: try again soon",
        "refusal": "server-starting",
    }
