"""HTTP routes: /connect, /health, /ready, and the page at /."""

from __future__ import annotations

import httpx

from tests.support import ServerThread


def test_connect_returns_only_a_websocket_url(server: ServerThread) -> None:
    """POST /connect answers what startBotAndConnect accepts: ws_url and nothing else."""
    reply = httpx.post(f"{server.http_url}/connect", json={})
    assert reply.status_code == 200
    assert reply.json() == {"ws_url": server.ws_url}


def test_connect_honours_the_public_url_behind_a_proxy(server: ServerThread) -> None:
    """Behind TLS termination the client is sent to wss:// on the public host."""
    from talkline.routes.http import websocket_url

    class FakeRequest:
        base_url = "http://10.0.0.5:5000/"

    assert websocket_url(FakeRequest(), "https://voice.example.com/") == (  # type: ignore[arg-type]
        "wss://voice.example.com/ws"
    )


def test_health_says_what_the_server_runs(server: ServerThread) -> None:
    """/health names the brain and the echo responder."""
    body = httpx.get(f"{server.http_url}/health").json()
    assert body["status"] == "ok"
    assert body["brain"] == "local" and body["responder"] == "echo"
    assert body["max_sessions"] == 100


def test_ready_once_models_and_piper_are_up(server: ServerThread) -> None:
    """/ready is 200 once Whisper, the VAD models and Piper are up."""
    reply = httpx.get(f"{server.http_url}/ready")
    assert reply.status_code == 200 and reply.json()["ready"] is True


def test_root_serves_a_page(server: ServerThread) -> None:
    """GET / serves HTML."""
    reply = httpx.get(f"{server.http_url}/")
    assert reply.status_code == 200 and "<html" in reply.text.lower()
