"""HTTP routes in process: /connect, /health, /ready, /metrics and the page at /."""

from __future__ import annotations

import time

import httpx
from fastapi import FastAPI
from starlette.requests import Request

from talkline.app import create_app
from talkline.metrics import LOOP_PROBE_SECS
from talkline.routes.http import websocket_url
from tests.support import StandInResources, in_process, local_settings, running_doors


def app_for(**settings: object) -> FastAPI:
    return create_app(local_settings(**settings), StandInResources())


async def test_connect_returns_only_a_websocket_url() -> None:
    """POST /connect answers what startBotAndConnect accepts: ws_url and nothing else."""
    async with in_process(app_for()) as http:
        reply = await http.post("/connect", json={})
    assert reply.status_code == 200
    assert reply.json() == {"ws_url": "ws://testserver/ws"}


async def test_connect_honours_the_public_url_behind_a_proxy() -> None:
    """Behind TLS termination the client is sent to wss:// on the public host."""
    async with in_process(app_for(public_url="https://voice.example.com/")) as http:
        reply = await http.post("/connect", json={})
    assert reply.json() == {"ws_url": "wss://voice.example.com/ws"}
    scope = {"type": "http", "scheme": "http", "server": ("10.0.0.5", 5000), "path": "/"}
    scope |= {"headers": [], "query_string": b"", "root_path": ""}
    assert websocket_url(Request(scope), None) == "ws://10.0.0.5:5000/ws"


async def test_health_says_what_the_server_runs() -> None:
    """/health names the brain, the echo responder and the cap."""
    async with in_process(app_for(max_sessions=7)) as http:
        body = (await http.get("/health")).json()
    assert body["status"] == "ok"
    assert body["brain"] == "local" and body["responder"] == "echo"
    assert body["max_sessions"] == 7 and body["sessions"] == 0


async def test_metrics_are_prometheus_text() -> None:
    """/metrics names talkline's counters in Prometheus' text format."""
    async with in_process(app_for()) as http:
        reply = await http.get("/metrics")
    assert reply.headers["content-type"].startswith("text/plain")
    assert "talkline_sessions_active 0.0" in reply.text


async def test_root_serves_the_built_page() -> None:
    """GET / serves the web client's HTML."""
    async with in_process(app_for()) as http:
        reply = await http.get("/")
    assert reply.status_code == 200 and "<html" in reply.text.lower()


def lag_count_at_least(text: str, seconds: str) -> float:
    """The loop-lag histogram's count in the bucket ``le=seconds`` and above it."""
    total = next(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("talkline_event_loop_lag_seconds_count")
    )
    below = next(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(f'talkline_event_loop_lag_seconds_bucket{{le="{seconds}"}}')
    )
    return total - below


def test_metrics_show_how_late_the_event_loop_runs() -> None:
    """A loop blocked for 0.6 s shows in talkline_event_loop_lag_seconds, above 0.25 s."""

    async def block() -> None:
        time.sleep(0.6)  # noqa: ASYNC251 - a session hogging the loop, as every other one feels it

    with running_doors() as server:
        before = lag_count_at_least(httpx.get(f"{server.http_url}/metrics").text, "0.25")
        server.call(block())
        time.sleep(LOOP_PROBE_SECS * 2)
        after = lag_count_at_least(httpx.get(f"{server.http_url}/metrics").text, "0.25")
    assert after >= before + 1
