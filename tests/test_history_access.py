"""Who may read the history: API keys when access is on, loopback only when it is off, and
replicas sharing one PostgreSQL read each other's records."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from talkline.app import create_app
from tests.history_support import session_row, write
from tests.postgres import PostgresServer, running_postgres
from tests.support import ServerThread, StandInResources, local_settings, running_doors

KEY = "hk-4d2c9e7a1f"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


def get(server: ServerThread, path: str, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.get(f"{server.http_url}{path}", headers=headers, timeout=30)


def test_without_access_control_loopback_reads_the_history(tmp_path: Any) -> None:
    """No keys set: a client on this machine lists sessions and reads one."""
    with running_doors(data_dir=tmp_path) as server:
        write(server, session_row("s1"))
        listing = get(server, "/sessions")
        one = get(server, "/sessions/s1")
        missing = get(server, "/sessions/nope")
        unknown = get(server, "/sessions?end_reason=bored")
    assert listing.status_code == 200 and listing.json()["sessions"][0]["id"] == "s1"
    assert one.status_code == 200 and one.json()["transcript"] == []
    assert missing.status_code == 404
    assert unknown.status_code == 422 and "server-lost" in unknown.json()["detail"]


async def test_without_access_control_other_addresses_are_refused(tmp_path: Any) -> None:
    """No keys set: a client from another address gets 403, not what users said."""
    app = create_app(local_settings(data_dir=tmp_path), StandInResources())
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://talkline") as http:
        reply = await http.get("/sessions")
        detail = await http.get("/sessions/s1")
    assert reply.status_code == 403 and "loopback" in reply.json()["detail"]
    assert detail.status_code == 403


def test_with_access_control_a_key_is_required(tmp_path: Any) -> None:
    """Keys set: no key and a wrong key get 401 (the key never echoed); a valid key reads."""
    with running_doors(data_dir=tmp_path, api_keys=f"other,{KEY}", token_secret="sig") as server:
        write(server, session_row("s1"))
        none = get(server, "/sessions")
        wrong = get(server, "/sessions", key="hk-wrong")
        detail_wrong = get(server, "/sessions/s1", key="hk-wrong")
        right = get(server, "/sessions", key=KEY)
    assert none.status_code == 401 and wrong.status_code == 401
    assert detail_wrong.status_code == 401 and "hk-wrong" not in detail_wrong.text
    assert right.status_code == 200 and [s["id"] for s in right.json()["sessions"]] == ["s1"]


def test_history_off_says_so(tmp_path: Any) -> None:
    with running_doors(data_dir=tmp_path, history=False) as server:
        reply = get(server, "/sessions")
    assert reply.status_code == 404 and "TALKLINE_HISTORY" in reply.json()["detail"]
    assert not (tmp_path / "history.db").exists()


def test_replicas_sharing_postgresql_read_each_others_records(postgres: PostgresServer) -> None:
    """Two replicas on one PostgreSQL: each lists both; a filter picks one replica's."""
    common = {"database_url": postgres.url, "api_keys": KEY, "token_secret": "sig"}
    with (
        running_doors(replica="replica-a", **common) as a,
        running_doors(replica="replica-b", **common) as b,
    ):
        write(a, session_row("from-a", replica="replica-a"))
        write(b, session_row("from-b", replica="replica-b"))
        from_b = get(b, "/sessions/from-a", key=KEY)
        everything = get(a, "/sessions", key=KEY).json()
        only_b = get(a, "/sessions?replica=replica-b", key=KEY).json()
        wrong = get(b, "/sessions/from-a", key="nope")
    assert from_b.status_code == 200 and from_b.json()["replica"] == "replica-a"
    assert {s["id"] for s in everything["sessions"]} == {"from-a", "from-b"}
    assert [s["id"] for s in only_b["sessions"]] == ["from-b"]
    assert wrong.status_code == 401


def test_openapi_documents_the_history_routes(tmp_path: Any) -> None:
    schema = create_app(local_settings(data_dir=tmp_path), StandInResources()).openapi()
    assert {"/sessions", "/sessions/{session_id}"} <= set(schema["paths"])
    detail = schema["components"]["schemas"]["SessionDetail"]["properties"]
    assert {"transcript", "end_reason", "latency_p95_ms", "api_key_id"} <= set(detail)
