"""The resume registry alone, both kinds: in this process and in a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from talkline.app import create_app
from talkline.coordinator.resume import (
    TRANSCRIPT_MESSAGES,
    Conversation,
    Hold,
    LocalResumeRegistry,
    RedisResumeRegistry,
    ResumeProblem,
    ResumeRefused,
    ResumeRegistry,
    new_secret,
    secret_hash,
)
from talkline.lifecycle import EndReason
from talkline.resumption import ResumeLink
from tests.cluster import running_redis
from tests.replicas import redis_server
from tests.support import Clock, StandInResources, in_process, local_settings


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(params=["local", "redis"])
async def registry(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[ResumeRegistry]:
    made: ResumeRegistry
    if request.param == "local":
        made = LocalResumeRegistry(60)
    else:
        made = RedisResumeRegistry(redis_url, 60)
    yield made
    await made.close()


async def started(registry: ResumeRegistry, session_id: str) -> str:
    secret = new_secret(session_id)
    await registry.create(Conversation(session_id, "A", secret_hash(secret), "key-0"))
    return secret


async def refusal(coroutine: object) -> ResumeProblem:
    with pytest.raises(ResumeRefused) as refused:
        await coroutine  # type: ignore[misc]
    return refused.value.problem


async def test_the_secret_opens_its_conversation_for_its_key_only(registry: ResumeRegistry) -> None:
    """check: the right secret and key find it; a wrong secret or key is forbidden."""
    secret = await started(registry, "s-check")
    assert (await registry.check(secret, "key-0")).owner == "A"
    assert await refusal(registry.check(secret + "x", "key-0")) is ResumeProblem.FORBIDDEN
    assert await refusal(registry.check(secret, "key-1")) is ResumeProblem.FORBIDDEN
    assert await refusal(registry.check(new_secret("s-none"), "key-0")) is ResumeProblem.GONE


async def test_a_claim_bumps_the_epoch_once_and_fences_the_old_owner(
    registry: ResumeRegistry,
) -> None:
    """claim at epoch 1 gives epoch 2 to B; the same claim again is stale; A's writes fail."""
    await started(registry, "s-claim")
    assert (
        await registry.store("s-claim", 1, "h1", [{"role": "user", "content": "hi"}]) is Hold.KEPT
    )
    claimed = await registry.claim("s-claim", 1, "B", secret_hash("new"))
    assert (claimed.epoch, claimed.owner, claimed.handle) == (2, "B", "h1")
    assert claimed.transcript == [{"role": "user", "content": "hi"}]
    assert await refusal(registry.claim("s-claim", 1, "C", "x")) is ResumeProblem.STALE
    assert await registry.store("s-claim", 1, "late", []) is Hold.FENCED
    assert await registry.keep_alive("s-claim", 1) is Hold.FENCED
    await registry.end("s-claim", 1)  # the old owner cannot end it either
    assert await registry.keep_alive("s-claim", 2) is Hold.KEPT


async def test_the_transcript_is_bounded_and_an_ended_conversation_is_gone(
    registry: ResumeRegistry,
) -> None:
    """Only the newest messages are kept; after end() a claim finds nothing."""
    await started(registry, "s-end")
    words = [{"role": "user", "content": str(n)} for n in range(TRANSCRIPT_MESSAGES + 5)]
    assert await registry.store("s-end", 1, "h", words) is Hold.KEPT
    claimed = await registry.claim("s-end", 1, "B", "x")
    assert claimed.transcript == words[-TRANSCRIPT_MESSAGES:]
    await registry.end("s-end", 2)
    assert await refusal(registry.claim("s-end", 2, "C", "y")) is ResumeProblem.GONE


async def test_a_local_entry_lives_for_the_window_after_its_last_keep_alive() -> None:
    """In process: keep-alives push the end of the window; past it the conversation is gone."""
    clock = Clock()
    registry = LocalResumeRegistry(10, clock)
    secret = await started(registry, "s-window")
    clock.advance(8)
    assert await registry.keep_alive("s-window", 1) is Hold.KEPT
    clock.advance(8)
    assert (await registry.check(secret, "key-0")).epoch == 1
    clock.advance(3)
    assert await refusal(registry.check(secret, "key-0")) is ResumeProblem.GONE


async def test_the_health_check_says_where_conversations_live() -> None:
    """``/health`` names the registry: local by default, off with a zero window."""

    answers = []
    for window in (60, 0):
        app = create_app(local_settings(resume_window=window), StandInResources())
        async with in_process(app) as http:
            answers.append((await http.get("/health")).json()["resume"])
    assert answers == ["local", "off"]


async def test_a_redis_entry_expires_with_the_window(redis_url: str) -> None:
    """In Redis the entry has the window as its TTL, renewed by each fenced write."""
    registry = RedisResumeRegistry(redis_url, 0.3)
    try:
        secret = await started(registry, "s-ttl")
        assert await registry.keep_alive("s-ttl", 1) is Hold.KEPT
        await asyncio.sleep(0.5)
        assert await refusal(registry.check(secret, "key-0")) is ResumeProblem.GONE
    finally:
        await registry.close()


def test_only_a_hash_of_the_secret_is_stored() -> None:
    """The registry's record of a conversation holds a hash, never the secret."""
    secret = new_secret("s-hash")
    conversation = Conversation("s-hash", "A", secret_hash(secret))
    assert secret not in repr(conversation) and secret.split(".")[1] not in str(vars(conversation))


async def forget_everything(registry: ResumeRegistry, redis_url: str) -> None:
    """What a Redis restart without persistence does to the registry."""
    if isinstance(registry, LocalResumeRegistry):
        registry._entries.clear()
        return
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        await client.flushall()
    finally:
        await client.aclose()


async def test_a_live_owner_writes_its_conversation_again_after_the_registry_lost_it(
    registry: ResumeRegistry, redis_url: str
) -> None:
    """Redis restarted empty: the owner is not fenced (nobody took over); its next write
    finds the entry lost and writes it anew, so the client can still resume."""
    link = ResumeLink(registry, "s-lost", "A", "key-0")
    message = await link.open()
    try:
        await forget_everything(registry, redis_url)
        fenced: list[bool] = []
        link.on_fenced = lambda: fenced.append(True)
        assert await registry.keep_alive("s-lost", link.epoch) is Hold.LOST
        await link.store("h-after", [{"role": "user", "content": "still here"}])
        assert not fenced
        found = await registry.check(message["resume"], "key-0")
        assert (found.handle, found.epoch, found.owner) == ("h-after", link.epoch, "A")
        assert found.transcript == [{"role": "user", "content": "still here"}]
    finally:
        await link.finish(EndReason.CLIENT_DISCONNECTED, 1000)


async def test_a_keep_alive_records_when_someone_last_spoke(registry: ResumeRegistry) -> None:
    """A resume's idle timeout counts from ``last_active``, which each keep-alive carries."""
    secret = await started(registry, "s-active")
    assert (await registry.check(secret, "key-0")).last_active == 0.0  # nobody spoke yet
    assert await registry.keep_alive("s-active", 1, 1_700_000_123.25) is Hold.KEPT
    assert await registry.keep_alive("s-active", 1) is Hold.KEPT  # no news: kept as it was
    assert (await registry.check(secret, "key-0")).last_active == 1_700_000_123.25


async def test_a_redis_restart_does_not_cost_the_next_conversation_its_entry(
    tmp_path: Path,
) -> None:
    """Redis restarts under a live registry: the next conversation is still registered (a
    transaction on a pooled connection Redis dropped fails once; redis-py does not retry
    transactions, the registry does)."""
    with running_redis(tmp_path) as server:
        registry = RedisResumeRegistry(server.url, 60)
        try:
            before = await started(registry, "s-before")
            server.stop()
            server.start()
            after = await started(registry, "s-after")
            assert (await registry.check(after, "key-0")).session_id == "s-after"
            assert before != after
        finally:
            await registry.close()
