"""Access control: API keys on /connect, signed tokens on /ws, origins, and secrets kept out."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from loguru import logger

from talkline.auth import TokenError, mint_token, verify_token
from talkline.client import RTVIClient
from talkline.emulator import GeminiEmulator
from tests.support import (
    ServerThread,
    running_doors,
    running_gemini_server,
    speak_and_wait_for_answer,
)

KEY = "tk-live-8c1f0e9a2b"
SECRET = "sig-3fa9d27c51e0"
ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
def locked() -> Iterator[ServerThread]:
    """A server with API keys, a signing secret and one allowed browser origin.

    Its doors are what is tested, so it loads no models; a whole authenticated session runs
    in ``test_secrets_never_reach_logs_errors_or_pages``.
    """
    with running_doors(
        api_keys=f"other-key,{KEY}", token_secret=SECRET, allowed_origins=ORIGIN
    ) as server:
        yield server


def connect(server: ServerThread, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{server.http_url}/connect", json={}, headers=headers)


@pytest.mark.parametrize("key", [None, "wrong-key", ""])
def test_connect_without_a_valid_key_is_401(locked: ServerThread, key: str | None) -> None:
    reply = connect(locked, key)
    assert reply.status_code == 401
    assert "API key is required" in reply.json()["error"]


def test_connect_with_a_key_returns_a_short_lived_token(locked: ServerThread) -> None:
    reply = connect(locked, KEY)
    assert reply.status_code == 200
    body = reply.json()
    assert set(body) == {"ws_url", "token"}
    claims = verify_token(SECRET.encode(), body["token"])
    assert 0 < float(str(claims["exp"])) - time.time() <= 60


async def refused(server: ServerThread, query: str) -> RTVIClient:
    async with RTVIClient(f"{server.ws_url}{query}") as client:
        await client.wait_for("closed", timeout=10)
    return client


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("", "missing token"),
        ("?token=garbage", "malformed token"),
        ("?token=abc.def", "invalid token"),
    ],
)
async def test_ws_without_a_valid_token_is_closed_1008_before_any_session(
    locked: ServerThread, query: str, reason: str
) -> None:
    """No valid token: close 1008 with the reason; no session, pipeline or upstream starts."""
    started = locked.state.admission.started_total
    client = await refused(locked, query)
    assert client.close_code == 1008 and reason in client.close_reason
    assert locked.state.admission.started_total == started


async def test_an_expired_token_is_refused(locked: ServerThread) -> None:
    token = mint_token(SECRET.encode(), ttl=-1)
    client = await refused(locked, f"?token={token}")
    assert client.close_code == 1008 and "expired token" in client.close_reason


def test_a_backend_can_mint_tokens_with_the_shared_secret() -> None:
    token = mint_token(SECRET.encode(), ttl=30, subject="my-backend")
    assert verify_token(SECRET.encode(), token)["sub"] == "my-backend"
    with pytest.raises(TokenError, match="invalid token"):
        verify_token(b"another-secret", token)


def test_cors_allows_only_the_configured_origin(locked: ServerThread) -> None:
    preflight = {"Access-Control-Request-Method": "POST"}
    good = httpx.options(f"{locked.http_url}/connect", headers={"Origin": ORIGIN, **preflight})
    bad = httpx.options(
        f"{locked.http_url}/connect", headers={"Origin": "https://evil.example", **preflight}
    )
    assert good.headers.get("access-control-allow-origin") == ORIGIN
    assert "access-control-allow-origin" not in bad.headers


async def test_ws_from_another_origin_is_closed_1008(locked: ServerThread) -> None:
    token = connect(locked, KEY).json()["token"]
    from websockets.asyncio.client import connect as ws_connect

    async with ws_connect(
        f"{locked.ws_url}?token={token}",
        origin="https://evil.example",  # type: ignore[arg-type]
    ) as ws:
        await ws.wait_closed()
    assert ws.close_code == 1008 and ws.close_reason == "origin not allowed"


async def test_secrets_never_reach_logs_errors_or_pages(weather_pcm: bytes) -> None:
    """A full authenticated Gemini session, with failures: no secret value in any output."""
    gemini_key = "AIza-do-not-print-me"
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="TRACE")
    seen: list[str] = []
    try:
        async with GeminiEmulator(valid_keys={gemini_key}) as emu:
            with running_gemini_server(
                emu, gemini_api_key=gemini_key, api_keys=KEY, token_secret=SECRET
            ) as server:
                seen.append(connect(server, "wrong").text)
                reply = connect(server, KEY)
                token = reply.json()["token"]
                seen.append(httpx.get(f"{server.http_url}/health").text)
                seen.append(httpx.get(f"{server.http_url}/metrics").text)
                seen.append(httpx.get(f"{server.http_url}/").text)
                async with RTVIClient(f"{server.ws_url}?token={token}") as client:
                    await client.client_ready()
                    await speak_and_wait_for_answer(client, weather_pcm)
                seen += [str(e.data) for e in client.events]
                await refused(server, "?token=" + token[:-3] + "xyz")
    finally:
        logger.remove(sink)
    everything = "\n".join(lines + seen)
    assert "session summary" in everything  # the logs were captured
    for secret in (gemini_key, KEY, SECRET, token):
        assert secret not in everything, f"a secret leaked: {secret[:4]}…"
