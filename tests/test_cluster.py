"""Three replicas behind HAProxy (deploy/haproxy.cfg) share one session cap in Redis.

Real processes on 127.0.0.1: redis-server, the Gemini emulator, three ``talkline serve``
replicas and haproxy (``tests/cluster.py``). Clients connect from distinct loopback
addresses, which reach the replicas through HAProxy's X-Forwarded-For.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from talkline.audio import silence
from talkline.auth import mint_token
from talkline.client import RTVIClient
from talkline.client_resume import resume_url
from talkline.coordinator.leases import LeaseStore
from tests.cluster import Cluster, running_cluster, wait_for
from tests.support import speak_and_wait_for_answer, speak_until_turns
from tests.test_resume import bot_texts, talk_turns, wait_resumable

LEASE_TTL, LEASE_RENEW = 6.0, 2.0
KEYS = ("k1", "k2", "k3")
SECRET = "cluster-secret-5d1f0c"  # shared by the replicas; tokens are minted with it here
FULL = "server full: all 4 session slots are in use, try again later"
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Cap 4 in all, 2 per address, 2 per API key; leases of 6 s renewed every 2 s."""
    settings: dict[str, Any] = {
        "max_sessions": 4,
        "max_sessions_per_client": 2,
        "max_sessions_per_key": 2,
        "api_keys": ",".join(KEYS),
        "token_secret": SECRET,
        "lease_ttl": LEASE_TTL,
        "lease_renew": LEASE_RENEW,
    }
    with running_cluster(tmp_path_factory.mktemp("cluster"), **settings) as running:
        yield running


async def connect(cluster: Cluster, key: str, source: str, url: str | None = None) -> RTVIClient:
    """A client from ``source`` with a token for ``key``; through HAProxy unless ``url``."""
    token = mint_token(SECRET.encode(), 300, f"key-{KEYS.index(key)}")
    client = RTVIClient(f"{url or cluster.proxy.ws_url}?token={token}", source=source)
    await client.connect()
    return client


async def admitted(cluster: Cluster, key: str, source: str) -> RTVIClient:
    client = await connect(cluster, key, source)
    await client.client_ready()
    return client


async def refusal(client: RTVIClient) -> tuple[int | None, str]:
    await client.wait_until(lambda: client.closed)
    return client.close_code, client.close_reason


@contextlib.asynccontextmanager
async def closing(clients: list[RTVIClient]) -> AsyncIterator[list[RTVIClient]]:
    try:
        yield clients
    finally:
        await asyncio.gather(*(client.close() for client in clients))


async def counted(cluster: Cluster) -> int:
    """Leases held in Redis now (expired ones purged), asked as an outsider."""
    client = Redis.from_url(cluster.redis.url)
    try:
        return await LeaseStore(client, "test").count()
    finally:
        await client.aclose()


async def until_counted(cluster: Cluster, expected: int, timeout: float) -> float:
    """Seconds until Redis counts ``expected`` leases."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while await counted(cluster) != expected:
            await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_four_talk_the_fifth_is_refused_and_a_killed_replica_frees_its_slots(
    cluster: Cluster, weather_pcm: bytes
) -> None:
    """Cap 4 over three replicas: four clients talk, the fifth gets 1013; ``kill -9`` of the
    replica with two of them frees both slots within the lease time."""
    keys = ["k1", "k1", "k2", "k2"]
    clients = [await admitted(cluster, key, f"127.0.0.{10 + i}") for i, key in enumerate(keys)]
    async with closing(clients):
        fifth = await connect(cluster, "k3", "127.0.0.15")
        assert await refusal(fifth) == (1013, FULL)
        await asyncio.gather(*(speak_and_wait_for_answer(c, weather_pcm) for c in clients))
        assert all(client.of_type("bot-stopped-speaking") for client in clients)
        sessions = await asyncio.to_thread(cluster.sessions)
        assert sorted(sessions.values()) == [1, 1, 2], sessions
        victim = next(r for r in cluster.replicas if sessions[r.name] == 2)
        victim.kill()
        freed_after = await until_counted(cluster, 2, LEASE_TTL + 5)
        assert LEASE_TTL - LEASE_RENEW - 1 <= freed_after <= LEASE_TTL + 1, freed_after
        late = [
            await admitted(cluster, "k3", "127.0.0.16"),
            await admitted(cluster, "k3", "127.0.0.17"),
        ]
        clients += late
        sixth = await connect(cluster, "k1", "127.0.0.18")
        assert await refusal(sixth) == (1013, FULL)
    victim.start()
    await asyncio.to_thread(wait_for, victim.ready, "the restarted replica")
    await asyncio.to_thread(cluster.wait_proxied)
    await until_counted(cluster, 0, 10)


async def test_per_address_and_per_key_caps_hold_across_replicas(cluster: Cluster) -> None:
    """Two sessions of one address (or API key) on two replicas use its whole share."""
    health = await asyncio.to_thread(cluster.replicas[0].health)
    assert (health["coordinator"], health["replica"]) == ("redis", "replica1")
    same_address = [await admitted(cluster, key, "127.0.0.30") for key in ("k1", "k2")]
    async with closing(same_address):
        assert len([n for n in (await asyncio.to_thread(cluster.sessions)).values() if n]) == 2
        third = await connect(cluster, "k3", "127.0.0.30")
        assert await refusal(third) == (1013, "too many sessions from your address (2 at most)")
    await until_counted(cluster, 0, 10)
    same_key = [await admitted(cluster, "k1", f"127.0.0.{31 + i}") for i in range(2)]
    async with closing(same_key):
        third = await connect(cluster, "k1", "127.0.0.33")
        assert await refusal(third) == (1013, "too many sessions for your API key (2 at most)")
        other_key = await admitted(cluster, "k2", "127.0.0.33")
        same_key.append(other_key)
    await until_counted(cluster, 0, 10)


async def test_redis_stopped_live_sessions_talk_new_ones_wait_then_leases_come_back(
    cluster: Cluster, weather_pcm: bytes
) -> None:
    """Redis away: live sessions answer, a new one gets 1013, /ready is 503. Redis back
    (empty): the two live leases are re-asserted and new sessions are admitted."""
    live = [await admitted(cluster, key, f"127.0.0.{40 + i}") for i, key in enumerate(KEYS[:2])]
    async with closing(live):
        cluster.redis.stop()
        replica = cluster.replicas[0]
        await asyncio.to_thread(
            wait_for, lambda: not any(r.ready() for r in cluster.replicas), "503", 10
        )
        assert replica.get("/ready").json()["refusal"] == "coordinator-unavailable"
        direct = await connect(cluster, "k3", "127.0.0.42", url=replica.ws_url)
        code, reason = await refusal(direct)
        assert code == 1013 and reason.startswith("session coordinator unavailable")
        await asyncio.gather(*(speak_and_wait_for_answer(c, weather_pcm) for c in live))
        assert all(client.of_type("bot-stopped-speaking") and not client.closed for client in live)
        cluster.redis.start()
        await asyncio.to_thread(cluster.wait_ready, 15)
        await asyncio.to_thread(cluster.wait_proxied)
        assert await counted(cluster) == 2
        late = await admitted(cluster, "k3", "127.0.0.43")
        live.append(late)
        await speak_and_wait_for_answer(late, weather_pcm)
        assert await counted(cluster) == 3
    await until_counted(cluster, 0, 10)


async def test_a_conversation_resumes_through_haproxy_on_another_replica(
    cluster: Cluster, weather_pcm: bytes
) -> None:
    """Two turns through HAProxy, then ``kill -9`` of the replica that answered them: the
    client resumes through HAProxy on another replica, and its next turn is turn 3 of the
    same Gemini conversation (the newest handle went with it)."""
    client = await admitted(cluster, "k1", "127.0.0.50")
    offer = await wait_resumable(client)
    await talk_turns(client, weather_pcm, 2)
    await asyncio.sleep(0.3)  # the last answer's handle reaches Redis
    first = client.of_type("bot-ready")[0].data["about"]["replica"]
    victim = next(r for r in cluster.replicas if r.name == first)
    victim.kill()
    await client.wait_for("closed", timeout=10)
    url = await resume_url(cluster.proxy.http_url, offer["resume"], api_key="k1")
    second = RTVIClient(url, source="127.0.0.50")
    async with closing([client, second]):
        await second.connect()
        ready = await second.client_ready()
        await speak_until_turns(second, weather_pcm + silence(0.6), 1)
    victim.start()
    await asyncio.to_thread(wait_for, victim.ready, "the restarted replica")
    await asyncio.to_thread(cluster.wait_proxied)
    await until_counted(cluster, 0, 10)

    about = ready.data["about"]
    assert about["resumed"] is True and about["replica"] != first
    assert bot_texts(second) == ["reply 3"]
