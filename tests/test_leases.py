"""The lease scripts against a real redis-server: caps, expiry, takeover, detach, renewal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from talkline.coordinator.leases import Lease, LeaseStore
from tests.cluster import RedisServer, running_redis

TTL_MS = 60_000
CAPS = (3, 2, 2)  # total, per API key, per address


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


def store(client: Redis, owner: str = "replica-a") -> LeaseStore:
    return LeaseStore(client, owner)


def lease(session_id: str, key: str = "", addr: str = "10.0.0.1") -> Lease:
    return Lease(session_id, key, addr)


async def test_admits_up_to_the_total_then_refuses_until_one_is_released(client: Redis) -> None:
    """The fourth session is refused 'server-full'; a release makes room at once."""
    leases = store(client)
    for index in range(3):
        assert await leases.admit(lease(f"s{index}", addr=f"10.0.0.{index}"), TTL_MS, CAPS) == (
            "ok",
            index + 1,
        )
    assert await leases.admit(lease("s3", addr="10.0.0.9"), TTL_MS, CAPS) == ("server-full", 3)
    assert await leases.release("s0") == (True, 2)
    assert await leases.admit(lease("s3", addr="10.0.0.9"), TTL_MS, CAPS) == ("ok", 3)


async def test_per_key_and_per_address_caps_count_across_owners(client: Redis) -> None:
    """Two replicas share each API key's and each address's share."""
    one, two = store(client, "replica-a"), store(client, "replica-b")
    caps = (10, 2, 2)
    assert (await one.admit(lease("a1", "key-0", "10.0.0.1"), TTL_MS, caps))[0] == "ok"
    assert (await two.admit(lease("a2", "key-0", "10.0.0.2"), TTL_MS, caps))[0] == "ok"
    assert (await two.admit(lease("a3", "key-0", "10.0.0.3"), TTL_MS, caps))[0] == "key-full"
    assert (await one.admit(lease("b1", "key-1", "10.0.0.1"), TTL_MS, caps))[0] == "ok"
    assert (await two.admit(lease("b2", "key-1", "10.0.0.1"), TTL_MS, caps))[0] == "address-full"
    assert (await one.admit(lease("c1", "", "10.0.0.3"), TTL_MS, caps))[0] == "ok"
    await one.release("a1")
    assert (await two.admit(lease("a3", "key-0", "10.0.0.3"), TTL_MS, caps))[0] == "ok"


async def test_an_expired_lease_is_purged_with_its_key_and_address_entries(client: Redis) -> None:
    """A lease not renewed within its time is gone, and so is every trace of it."""
    leases = store(client)
    assert (await leases.admit(lease("old", "key-0", "10.0.0.1"), 200, (1, 1, 1)))[0] == "ok"
    assert (await leases.admit(lease("new", "key-0", "10.0.0.1"), TTL_MS, (1, 1, 1)))[0] == (
        "server-full"
    )
    await asyncio.sleep(0.3)
    assert await leases.count() == 0
    assert await client.keys("*") == []
    assert await leases.admit(lease("new", "key-0", "10.0.0.1"), TTL_MS, (1, 1, 1)) == ("ok", 1)


async def test_takeover_moves_the_lease_without_counting_a_new_session(client: Redis) -> None:
    """With the cluster full, a resume of a held id is admitted; the old owner can no longer
    free or renew it."""
    old, new = store(client, "replica-a"), store(client, "replica-b")
    assert (await old.admit(lease("s1", "key-0", "10.0.0.1"), TTL_MS, (1, 1, 1)))[0] == "ok"
    assert (await new.admit(lease("s2"), TTL_MS, (1, 1, 1)))[0] == "server-full"
    moved = lease("s1", "key-0", "10.0.0.7")  # the phone changed networks
    assert await new.admit(moved, TTL_MS, (1, 1, 1), takeover=True) == ("ok", 1)
    assert await client.hget("talkline:{cap}:lease:s1", "owner") == b"replica-b"
    assert await client.smembers("talkline:{cap}:addr:10.0.0.7") == {b"s1"}
    assert await client.exists("talkline:{cap}:addr:10.0.0.1") == 0
    assert await old.release("s1") == (False, 1)
    assert await old.detach("s1", 1) is False
    assert await old.renew([lease("s1")], 100) == (1, 0)
    score = await client.zscore("talkline:{cap}:leases", "s1")
    assert await new.release("s1") == (True, 0) and score is not None


async def test_takeover_of_a_lease_that_is_gone_counts_as_a_new_session(client: Redis) -> None:
    leases = store(client)
    assert (await leases.admit(lease("s0"), TTL_MS, (1, 1, 1)))[0] == "ok"
    refused = await leases.admit(lease("gone", addr="10.0.0.2"), TTL_MS, (1, 1, 1), takeover=True)
    assert refused == ("server-full", 1)


async def test_a_detached_lease_counts_until_its_window_ends(client: Redis) -> None:
    """Detach keeps the slot taken for the window, then it frees itself."""
    leases = store(client)
    assert (await leases.admit(lease("s1"), TTL_MS, (1, 1, 1)))[0] == "ok"
    assert await leases.detach("s1", 300) is True
    assert (await leases.admit(lease("s2", addr="10.0.0.2"), TTL_MS, (1, 1, 1)))[0] == (
        "server-full"
    )
    await asyncio.sleep(0.4)
    assert (await leases.admit(lease("s2", addr="10.0.0.2"), TTL_MS, (1, 1, 1)))[0] == "ok"


async def test_a_resume_within_the_window_takes_the_detached_lease(client: Redis) -> None:
    old, new = store(client, "replica-a"), store(client, "replica-b")
    assert (await old.admit(lease("s1"), TTL_MS, (1, 1, 1)))[0] == "ok"
    await old.detach("s1", 300)
    assert await new.admit(lease("s1"), TTL_MS, (1, 1, 1), takeover=True) == ("ok", 1)
    await asyncio.sleep(0.4)  # past the window: the new owner's lease time counts now
    assert await new.count() == 1


async def test_renewal_extends_leases_and_re_adds_the_ones_redis_lost(client: Redis) -> None:
    """One call renews all of an owner's leases; after a flush it puts them back."""
    leases = store(client)
    for name in ("s1", "s2"):
        assert (await leases.admit(lease(name, "key-0"), 300, CAPS))[0] == "ok"
    assert await leases.renew([lease("s1", "key-0"), lease("s2", "key-0")], TTL_MS) == (2, 0)
    await asyncio.sleep(0.4)
    assert await leases.count() == 2
    await client.flushall()
    assert await leases.renew([lease("s1", "key-0"), lease("s2", "key-0")], TTL_MS) == (2, 2)
    assert await client.scard("talkline:{cap}:key:key-0") == 2
    assert (await leases.admit(lease("s3", "key-0"), TTL_MS, CAPS))[0] == "key-full"


async def test_times_come_from_redis_not_from_the_replica(
    client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica whose clock is far off still gets leases of the right length."""
    monkeypatch.setattr("time.time", lambda: 0.0)
    leases = store(client)
    await leases.admit(lease("s1"), TTL_MS, CAPS)
    seconds, micros = await client.time()
    expiry = await client.zscore("talkline:{cap}:leases", "s1")
    assert expiry is not None
    assert 0 < expiry - (seconds * 1000 + micros // 1000) <= TTL_MS
