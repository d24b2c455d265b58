"""Admission with each coordinator: detach and takeover, and Redis going away and back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path

import pytest

from talkline.admission import Admission, AdmissionRefused, Refusal
from talkline.app import create_app
from talkline.config import SettingsError, load_settings
from talkline.coordinator import CoordinatorOptions, build_coordinator
from talkline.coordinator.local import LocalCoordinator
from talkline.coordinator.redis_cap import RedisCoordinator, RedisOptions
from talkline.refusals import Caps
from talkline.slots import SlotPool
from tests.cluster import RedisServer, running_redis, wait_for
from tests.support import StandInResources, in_process, local_settings

LEASE_TTL, LEASE_RENEW = 2.0, 0.2


async def refused(admit: Awaitable[object]) -> Refusal:
    with pytest.raises(AdmissionRefused) as refusal:
        await admit
    return refusal.value.decision.refusal


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path) as server:
        yield server


@pytest.fixture
async def on_redis(redis_server: RedisServer) -> AsyncIterator[Admission]:
    """Admission with a cluster cap of 2 on the Redis coordinator, leases of 2 s."""
    options = RedisOptions(redis_server.url, LEASE_TTL, LEASE_RENEW)
    coordinator = RedisCoordinator(Caps(2, 5, 5), options, "replica-test")
    await coordinator.start()
    try:
        yield Admission(StandInResources(), 2, coordinator=coordinator)
    finally:
        await coordinator.stop()


async def test_the_redis_coordinator_counts_the_cap_and_probes_stay_ready(
    on_redis: Admission,
) -> None:
    """Full: /connect's decision says so from the last count; /ready's probe stays ready."""
    await on_redis.admit("10.0.0.1")
    await on_redis.admit("10.0.0.2")
    assert await refused(on_redis.admit("10.0.0.3")) is Refusal.FULL
    decision = on_redis.decide("10.0.0.3")
    assert decision is not None and decision.refusal is Refusal.FULL
    assert on_redis.decide(probe=True) is None
    assert on_redis.coordinator.counted() == 2


async def test_a_detached_session_holds_its_slot_until_the_window_ends_or_it_resumes(
    on_redis: Admission,
) -> None:
    first = await on_redis.admit("10.0.0.1")
    await on_redis.admit("10.0.0.2")
    await on_redis.detach(first, 30.0)
    assert len(on_redis) == 1 and first.finished.is_set()
    assert await refused(on_redis.admit("10.0.0.3")) is Refusal.FULL
    resumed = await on_redis.admit("10.0.0.9", session_id=first.id)
    assert resumed.id == first.id and len(on_redis) == 2
    await on_redis.release(first)  # the old record: the resumed session keeps its lease
    assert await refused(on_redis.admit("10.0.0.3")) is Refusal.FULL
    await on_redis.release(resumed)
    assert (await on_redis.admit("10.0.0.3")).client == "10.0.0.3"


async def test_a_detached_lease_is_not_renewed(on_redis: Admission) -> None:
    """After the window (shorter than the lease time here) the slot is free again."""
    first = await on_redis.admit("10.0.0.1")
    await on_redis.admit("10.0.0.2")
    await on_redis.detach(first, 0.5)
    await asyncio.sleep(1.0)  # renewals ran meanwhile
    assert (await on_redis.admit("10.0.0.3")).client == "10.0.0.3"


async def test_live_leases_outlast_their_ttl_while_renewed(on_redis: Admission) -> None:
    await on_redis.admit("10.0.0.1")
    await on_redis.admit("10.0.0.2")
    await asyncio.sleep(LEASE_TTL * 1.5)
    assert await refused(on_redis.admit("10.0.0.3")) is Refusal.FULL


async def test_redis_away_refuses_new_sessions_then_back_re_asserts_the_leases(
    on_redis: Admission, redis_server: RedisServer
) -> None:
    """Stopped: new sessions and resumes get 'coordinator-unavailable' (1013), the probe
    says so; restarted empty: the live leases are back, counted, and admission opens."""
    live = [await on_redis.admit("10.0.0.1"), await on_redis.admit("10.0.0.2")]
    await on_redis.release(live.pop())
    redis_server.stop()
    assert await refused(on_redis.admit("10.0.0.3")) is Refusal.COORDINATOR_UNAVAILABLE
    assert await refused(on_redis.admit("10.0.0.1", session_id=live[0].id)) is (
        Refusal.COORDINATOR_UNAVAILABLE
    )
    decision = on_redis.decide(probe=True)
    assert decision is not None and decision.ws_code == 1013 and decision.http_status == 503
    assert len(on_redis) == 1  # the live session goes on
    redis_server.start()
    await asyncio.to_thread(wait_for, lambda: on_redis.decide(probe=True) is None, "ready", 10)
    assert on_redis.coordinator.counted() == 1
    await on_redis.admit("10.0.0.3")
    assert await refused(on_redis.admit("10.0.0.4")) is Refusal.FULL


async def test_a_redis_coordinator_that_never_reached_redis_is_not_ready(tmp_path: Path) -> None:
    options = RedisOptions("redis://127.0.0.1:1/0", LEASE_TTL, LEASE_RENEW)
    coordinator = RedisCoordinator(Caps(2, 2, 2), options, "replica-test")
    await coordinator.start()
    try:
        decision = Admission(StandInResources(), 2, coordinator=coordinator).decide(probe=True)
        assert decision is not None and decision.refusal is Refusal.COORDINATOR_UNAVAILABLE
    finally:
        await coordinator.stop()


def test_no_redis_url_builds_the_local_coordinator(tmp_path: Path) -> None:
    options = CoordinatorOptions(3, 2, None, None, 15.0, 5.0, "r", tmp_path)
    coordinator = build_coordinator(options)
    assert isinstance(coordinator, LocalCoordinator) and coordinator.slots is not None
    assert coordinator.caps == Caps(3, 2, 3)
    redis = build_coordinator(CoordinatorOptions(3, 2, 1, "redis://x", 15.0, 5.0, "r", None))
    assert isinstance(redis, RedisCoordinator) and redis.caps == Caps(3, 2, 1)


async def test_local_detach_counts_until_the_window_ends_then_frees_the_slot(
    tmp_path: Path,
) -> None:
    pool = SlotPool(tmp_path, 1)
    manager = Admission(StandInResources(), 1, slots=pool)
    record = await manager.admit("a")
    await manager.detach(record, 0.5)
    await asyncio.sleep(0.1)
    assert await refused(manager.admit("b")) is Refusal.FULL and pool.full()
    await asyncio.sleep(0.5)
    assert not pool.full() and (await manager.admit("b")).slot is not None


async def test_local_resume_within_the_window_keeps_the_slot(tmp_path: Path) -> None:
    pool = SlotPool(tmp_path, 1)
    manager = Admission(StandInResources(), 1, slots=pool)
    record = await manager.admit("a")
    await manager.detach(record, 0.2)
    resumed = await manager.admit("a2", session_id=record.id)
    assert resumed.slot is not None and record.slot is None
    await asyncio.sleep(0.3)  # the old window's timer must not free the resumed session
    assert pool.full() and await refused(manager.admit("b")) is Refusal.FULL
    await manager.release(resumed)
    assert not pool.full()


async def test_local_per_key_cap() -> None:
    manager = Admission(StandInResources(), 5, coordinator=LocalCoordinator(Caps(5, 5, 1)))
    await manager.admit("a", key_id="key-0")
    assert await refused(manager.admit("b", key_id="key-0")) is Refusal.KEY_FULL
    decision = manager.decide("b", "key-0")
    assert decision is not None and decision.reason == (
        "too many sessions for your API key (1 at most)"
    )
    await manager.admit("b", key_id="key-1")


def test_a_renewal_slower_than_half_the_lease_time_is_refused() -> None:
    with pytest.raises(SettingsError, match="TALKLINE_LEASE_RENEW must be at most half"):
        load_settings(lease_ttl=4.0, lease_renew=3.0)
    assert load_settings(lease_ttl=4.0, lease_renew=2.0).lease_renew == 2.0


def test_a_redis_url_of_another_scheme_is_refused_without_showing_it() -> None:
    with pytest.raises(SettingsError, match="must start with redis://") as refused:
        load_settings(redis_url="http://:hunter2-pw@example.org:6379")
    assert "hunter2-pw" not in str(refused.value)


async def test_an_unreachable_redis_is_logged_without_its_password(
    redis_server: RedisServer, logged: list[str]
) -> None:
    """Redis goes away: one warning naming the trouble; the URL's password appears nowhere."""
    url = redis_server.url.replace("redis://", "redis://:pw-7c1e9a@")
    coordinator = RedisCoordinator(Caps(2, 2, 2), RedisOptions(url, 2.0, 0.2), "replica-test")
    redis_server.stop()
    await coordinator.start()
    try:
        with pytest.raises(AdmissionRefused):
            await Admission(StandInResources(), 2, coordinator=coordinator).admit("10.0.0.1")
        await asyncio.sleep(1.5)  # retries meanwhile
    finally:
        await coordinator.stop()
    assert logged and not any("pw-7c1e9a" in line for line in logged)


async def test_health_names_the_coordinator() -> None:
    app = create_app(local_settings(max_sessions=3), StandInResources())
    async with in_process(app) as http:
        health = (await http.get("/health")).json()
    assert health["coordinator"] == "local" and health["sessions_counted"] == 0
