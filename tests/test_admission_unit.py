"""Admission and SlotPool alone, in-process: admission, release, slots and drain."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import talkline.admission
from talkline.admission import Admission, AdmissionRefused, SessionRecord
from talkline.lifecycle import EndReason, SessionState
from talkline.slots import SlotPool
from tests.support import StandInResources

FULL = "server full: all {} session slots are in use, try again later"


def refusal(admission: Admission, client: str | None = None) -> str | None:
    """The words a new session (from ``client``) would be refused with, or None."""
    decision = admission.decide(client)
    return decision.reason if decision else None


def test_probing_a_pool_takes_nothing(tmp_path: Path) -> None:
    """``full()`` is a question: asked many times, every slot can still be taken after."""
    pool = SlotPool(tmp_path, 3)
    assert not any(pool.full() for _ in range(50))
    held = [pool.acquire() for _ in range(3)]
    assert None not in held
    assert pool.acquire() is None and pool.full()


def test_probing_a_full_pool_takes_nothing_either(tmp_path: Path) -> None:
    pool = SlotPool(tmp_path, 2)
    held = [pool.acquire(), pool.acquire()]
    assert all(pool.full() for _ in range(10))
    for fd in held:
        assert fd is not None
        pool.release(fd)
    assert [pool.acquire() is not None for _ in range(2)] == [True, True]


def test_a_pool_of_n_gives_n_distinct_slots(tmp_path: Path) -> None:
    """The directory is made as needed; slot files are private to the server's user."""
    directory = tmp_path / "run" / "slots"
    pool = SlotPool(directory, 4)
    held = [pool.acquire() for _ in range(4)]
    assert None not in held and len(set(held)) == 4
    assert sorted(p.name for p in directory.iterdir()) == [f"slot-{i}.lock" for i in range(4)]
    assert {p.stat().st_mode & 0o777 for p in directory.iterdir()} == {0o600}


async def test_admits_up_to_the_cap_then_refuses_full() -> None:
    manager = Admission(StandInResources(), 2)
    assert manager.draining is False and manager.started_total == 0
    first, second = await manager.admit("a"), await manager.admit("b")
    assert first.slot is None and len(first.id) == 12 and manager.live[first.id] is first
    assert first.id != second.id and len(manager) == 2 and manager.started_total == 2
    with pytest.raises(AdmissionRefused) as refused:
        await manager.admit("c")
    assert refused.value.decision.reason == FULL.format(2) == str(refused.value)
    assert refusal(manager) == FULL.format(2)
    await manager.release(first)
    assert refusal(manager) is None and len(manager) == 1
    assert first.finished.is_set()
    assert (await manager.admit("c")).client == "c"


async def test_the_per_client_cap_counts_only_that_client() -> None:
    manager = Admission(StandInResources(), 10, max_per_client=2)
    await manager.admit("a")
    await manager.admit("a")
    expected = "too many sessions from your address (2 at most)"
    assert refusal(manager, "a") == expected
    assert refusal(manager, "b") is None
    assert refusal(manager) is None  # no client given: only the server-wide rules
    with pytest.raises(AdmissionRefused, match=r"too many sessions"):
        await manager.admit("a")
    await manager.admit("b")


async def test_the_per_client_cap_defaults_to_the_server_cap() -> None:
    manager = Admission(StandInResources(), 3)
    for _ in range(3):
        await manager.admit("a")
    assert refusal(manager, "a") == FULL.format(3)


async def test_a_draining_manager_refuses_with_shutting_down() -> None:
    manager = Admission(StandInResources(), 5)
    manager.draining = True
    assert refusal(manager, "a") == "server shutting down: try another server or again later"
    with pytest.raises(AdmissionRefused, match="shutting down"):
        await manager.admit("a")
    assert manager.started_total == 0


async def test_a_session_holds_a_slot_until_released(tmp_path: Path) -> None:
    pool = SlotPool(tmp_path, 1)
    manager = Admission(StandInResources(), 5, slots=pool)
    assert refusal(manager) is None
    record = await manager.admit("a")
    assert record.slot is not None and pool.full()
    await manager.release(record)
    assert record.slot is None and not pool.full()
    assert record.state is SessionState.CLOSED and record.finished.is_set()
    await manager.release(record)  # twice is harmless


async def test_slots_taken_elsewhere_make_the_server_full(tmp_path: Path) -> None:
    """Another worker holding every slot: this one refuses though it has no session."""
    other = SlotPool(tmp_path, 2)
    held = [other.acquire(), other.acquire()]
    manager = Admission(StandInResources(), 2, slots=SlotPool(tmp_path, 2))
    assert refusal(manager, "a") == FULL.format(2)
    with pytest.raises(AdmissionRefused, match="server full"):
        await manager.admit("a")
    assert len(manager) == 0 and manager.started_total == 0
    for fd in held:
        assert fd is not None
        other.release(fd)
    assert (await manager.admit("a")).slot is not None


async def test_asking_for_a_refusal_many_times_leaks_no_slot(tmp_path: Path) -> None:
    manager = Admission(StandInResources(), 3, slots=SlotPool(tmp_path, 3))
    for _ in range(30):
        assert refusal(manager, "a") is None
    records = [await manager.admit("a") for _ in range(3)]
    assert all(record.slot is not None for record in records)


def test_a_record_measures_its_duration() -> None:
    record = SessionRecord(id="x", client="a", started=0.0)
    assert record.duration > 0 and record.end_reason is EndReason.CLIENT_DISCONNECTED


async def test_drain_waits_for_each_session_to_finish_its_turn() -> None:
    """drain() hands each session the deadline, then returns only once every one is released."""
    manager = Admission(StandInResources(), 5)
    records = [await manager.admit("a"), await manager.admit("b")]
    seen: list[tuple[str, float]] = []
    turn_over = asyncio.Event()

    def drainer(record: SessionRecord) -> Callable[[float], Awaitable[None]]:
        async def drain(deadline: float) -> None:
            seen.append((record.id, deadline))
            await turn_over.wait()  # the answer under way
            await manager.release(record)

        return drain

    for record in records:
        record.drain = drainer(record)
    loop = asyncio.get_running_loop()
    before = loop.time()
    draining = asyncio.create_task(manager.drain(30.0))
    await asyncio.sleep(0.05)
    assert manager.draining and not draining.done()
    assert sorted(record_id for record_id, _ in seen) == sorted(r.id for r in records)
    assert all(before + 30.0 <= deadline <= loop.time() + 30.0 for _, deadline in seen)
    turn_over.set()
    async with asyncio.timeout(2):
        await draining
    assert len(manager) == 0


async def test_drain_waits_for_release_after_the_session_drain_returns() -> None:
    """The session's drain only starts its close; drain() waits for the release too."""
    manager = Admission(StandInResources(), 5)
    record = await manager.admit("a")

    async def drain(_deadline: float) -> None:
        return None

    record.drain = drain
    draining = asyncio.create_task(manager.drain(30.0))
    await asyncio.sleep(0.05)
    assert not draining.done()
    await manager.release(record)
    async with asyncio.timeout(2):
        await draining


async def test_drain_gives_up_after_the_timeout_and_the_close_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A session that never finishes does not hold the shutdown forever."""
    monkeypatch.setattr(talkline.admission, "CLOSE_GRACE_SECS", 0.2)
    manager = Admission(StandInResources(), 5)
    await manager.admit("a")
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(5):
        await manager.drain(0.1)
    assert loop.time() - started >= 0.3


async def test_drain_with_no_sessions_returns_at_once() -> None:
    manager = Admission(StandInResources(), 5)
    async with asyncio.timeout(1):
        await manager.drain(30.0)
    assert manager.draining and refusal(manager) is not None
