"""Admission, in process: /ready, /connect and /ws give one answer, from one decision.

These build the app with stand-in resources (no model is loaded) and call it without a
socket: httpx's ASGI transport for HTTP, Starlette's test client for the WebSocket.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from talkline.admission import Admission, AdmissionRefused, Refusal
from talkline.app import create_app
from talkline.auth import mint_token
from talkline.routes.deps import server_state
from talkline.slots import SlotPool
from tests.support import StandInResources, in_process, local_settings


@dataclass
class Doors:
    """What each door answered for a new session."""

    ready: tuple[int, dict[str, Any]]
    connect: tuple[int, dict[str, Any]]
    ws: tuple[int, str]


async def knock(app: FastAPI, ws_query: str = "") -> Doors:
    async with in_process(app) as http:
        ready = await http.get("/ready")
        connect = await http.post("/connect", json={})
    return Doors(
        (ready.status_code, ready.json()),
        (connect.status_code, connect.json()),
        ws_close(app, ws_query),
    )


def ws_close(app: FastAPI, query: str = "") -> tuple[int, str]:
    """The close code and reason /ws answers a new connection with."""
    with (
        pytest.raises(WebSocketDisconnect) as closed,
        TestClient(app).websocket_connect(f"/ws{query}") as ws,
    ):
        ws.receive_bytes()
    return closed.value.code, closed.value.reason


def occupy(app: FastAPI, client: str = "10.0.0.9") -> None:
    """One session from ``client`` admitted (on a loop of its own: callers may be sync)."""
    admission = server_state(app).admission
    with concurrent.futures.ThreadPoolExecutor(1) as apart:
        apart.submit(asyncio.run, admission.admit(client)).result()


def fill_slots(tmp_path: Path, size: int) -> list[int]:
    """Another worker's sessions: every slot of the shared pool taken outside this app."""
    pool = SlotPool(tmp_path / "slots", size)
    return [fd for fd in (pool.acquire() for _ in range(size)) if fd is not None]


def app_with(shared: StandInResources | None = None, **settings: Any) -> FastAPI:
    return create_app(local_settings(**settings), shared or StandInResources())


def full_app() -> FastAPI:
    app = app_with(max_sessions=1)
    occupy(app)
    return app


def draining_app() -> FastAPI:
    app = app_with()
    server_state(app).admission.draining = True
    return app


STATES: dict[str, tuple[Callable[[], FastAPI], Refusal, int, str]] = {
    "starting": (
        lambda: app_with(StandInResources(ready=False)),
        Refusal.STARTING,
        1013,
        "server starting",
    ),
    "failed to start": (
        lambda: app_with(StandInResources(failure="no Piper voice at /nowhere")),
        Refusal.START_FAILED,
        1011,
        "server failed to start: no Piper voice at /nowhere",
    ),
    "full": (
        full_app,
        Refusal.FULL,
        1013,
        "server full: all 1 session slots",
    ),
    "draining": (
        draining_app,
        Refusal.SHUTTING_DOWN,
        1013,
        "server shutting down",
    ),
}


@pytest.mark.parametrize("state", list(STATES))
async def test_every_door_refuses_with_the_same_words(state: str) -> None:
    """Starting, failed, full or draining: /ready, /connect and /ws say the same thing."""
    make, refusal, ws_code, words = STATES[state]
    doors = await knock(make())
    assert doors.ready[0] == 503 and doors.ready[1]["refusal"] == refusal.label
    assert doors.connect[0] == 503 and doors.connect[1]["refusal"] == refusal.label
    assert words in doors.ready[1]["reason"]
    assert doors.connect[1]["error"] == doors.ready[1]["reason"]
    assert doors.ws == (ws_code, doors.ready[1]["reason"])


async def test_a_ready_server_opens_every_door() -> None:
    """Nothing in the way: /ready 200, /connect gives a ws_url."""
    app = app_with()
    async with in_process(app) as http:
        ready = await http.get("/ready")
        connect = await http.post("/connect", json={})
    assert ready.status_code == 200 and ready.json() == {"ready": True, "sessions": 0}
    assert connect.status_code == 200 and connect.json() == {"ws_url": "ws://testserver/ws"}


async def test_slots_taken_by_other_workers_close_every_door(tmp_path: Path) -> None:
    """With workers, /ready turns 503 when the global cap is reached, as /connect and /ws do."""
    taken = fill_slots(tmp_path, 2)
    app = app_with(max_sessions=2, slots_dir=tmp_path / "slots")
    doors = await knock(app)
    assert len(taken) == 2 and len(server_state(app).admission) == 0
    assert doors.ready[0] == 503 and doors.ready[1]["refusal"] == "server-full"
    assert doors.connect[0] == 503 and doors.connect[1]["refusal"] == "server-full"
    assert doors.ws[0] == 1013 and doors.ws[1].startswith("server full")


async def test_probing_the_doors_leaks_no_slot(tmp_path: Path) -> None:
    """Many /ready and /connect calls take no slot: every one can still be taken after."""
    app = app_with(max_sessions=3, slots_dir=tmp_path / "slots")
    async with in_process(app) as http:
        for _ in range(10):
            assert (await http.get("/ready")).status_code == 200
            assert (await http.post("/connect", json={})).status_code == 200
    assert len(fill_slots(tmp_path, 3)) == 3


async def test_an_address_at_its_cap_is_refused_429_while_the_server_stays_ready() -> None:
    """One address's share is used: its /connect is 429; /ready (no address) stays 200."""
    app = app_with(max_sessions_per_client=1)
    occupy(app, "127.0.0.1")  # httpx's ASGI transport calls from 127.0.0.1
    async with in_process(app) as http:
        ready = await http.get("/ready")
        connect = await http.post("/connect", json={})
    assert ready.status_code == 200
    assert connect.status_code == 429 and connect.json()["refusal"] == "address-full"
    assert connect.json()["error"] == "too many sessions from your address (1 at most)"


def test_a_refused_websocket_is_counted_under_its_label() -> None:
    """Each refusal adds one to talkline_sessions_refused_total with the refusal's label."""
    app = app_with(max_sessions=1)
    occupy(app)
    for _ in range(3):
        ws_close(app)
    registry = server_state(app).metrics.registry
    value = registry.get_sample_value("talkline_sessions_refused_total", {"reason": "server-full"})
    assert value == 3


def test_a_valid_token_passes_access_and_reaches_admission() -> None:
    """With keys on, a valid token is not refused for access: admission decides (starting)."""
    secret = "sig-3fa9d27c51e0"
    app = app_with(StandInResources(ready=False), api_keys="k1", token_secret=secret)
    token = mint_token(secret.encode(), ttl=30)
    assert ws_close(app, f"?token={token}") == (1013, "server starting: try again soon")
    assert ws_close(app)[0] == 1008


async def test_admit_takes_a_slot_and_release_gives_it_back(tmp_path: Path) -> None:
    """A session holds one global slot while it lives; the last one refused is not admitted."""
    admission = Admission(StandInResources(), 2, slots=SlotPool(tmp_path, 2))
    first, second = await admission.admit("a"), await admission.admit("b")
    with pytest.raises(AdmissionRefused) as refused:
        await admission.admit("c")
    assert refused.value.decision.refusal is Refusal.FULL
    await admission.release(first)
    assert admission.decide() is None
    third = await admission.admit("c")
    assert all(record.slot is not None for record in (second, third))
    assert admission.started_total == 3 and len(admission) == 2
