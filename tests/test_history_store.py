"""The history's store and writer on real databases: SQLite files and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from loguru import logger
from prometheus_client import CollectorRegistry
from sqlalchemy import Connection, inspect, text

from talkline.history.store import (
    HEAD_REVISION,
    MIGRATIONS,
    DatabaseUrlError,
    HistoryStore,
    lost_replicas,
    utcnow,
)
from talkline.history.tables import metadata
from talkline.history.writer import HistoryMetrics, HistoryWriter, WriterOptions
from talkline.lifecycle import SERVER_LOST
from tests.history_support import session_row, turn_row
from tests.postgres import PostgresServer, running_postgres


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'sub' / 'history.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    yield server.url


@pytest.fixture
async def store(url: str) -> AsyncIterator[HistoryStore]:
    history = HistoryStore(url)
    await history.migrate()
    yield history
    if not history.is_sqlite:  # the next test starts from an empty PostgreSQL again
        async with history.engine.begin() as connection:
            await connection.execute(text("DROP SCHEMA public CASCADE"))
            await connection.execute(text("CREATE SCHEMA public"))
    await history.close()


async def tables(store: HistoryStore) -> set[str]:
    async with store.engine.connect() as connection:
        return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))


async def test_migrations_run_from_empty_and_again_as_a_no_op(store: HistoryStore) -> None:
    """From an empty database to the newest schema; a second and concurrent run change
    nothing and keep the rows."""
    assert {"sessions", "turns", "alembic_version"} <= await tables(store)
    await store.write([session_row("s1")], [turn_row("s1", 1, "hello")])
    await asyncio.gather(store.migrate(), store.migrate())
    async with store.engine.connect() as connection:
        version = await connection.execute(text("SELECT version_num FROM alembic_version"))
        assert version.scalars().all() == ["0001"]
    assert (await store.get_session("s1")) is not None


def test_the_revision_a_start_skips_alembic_at_is_alembics_head() -> None:
    """A start finds the database at ``HEAD_REVISION`` and leaves Alembic alone: a new
    migration must move it, or databases would never get it."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_heads() == [HEAD_REVISION]


async def test_a_database_behind_the_head_is_migrated(url: str) -> None:
    """One that Alembic has not brought to the head (here: the revision row removed) is
    migrated again, not taken as there already."""
    history = HistoryStore(url)
    try:
        await history.migrate()
        async with history.engine.begin() as connection:
            await connection.execute(text("DELETE FROM alembic_version"))
            await connection.execute(text("DROP TABLE turns"))
            await connection.execute(text("DROP TABLE sessions"))
        await history.migrate()
        assert {"sessions", "turns"} <= await tables(history)
        async with history.engine.connect() as connection:
            version = await connection.execute(text("SELECT version_num FROM alembic_version"))
            assert version.scalars().all() == [HEAD_REVISION]
    finally:
        if not history.is_sqlite:
            async with history.engine.begin() as connection:
                await connection.execute(text("DROP SCHEMA public CASCADE"))
                await connection.execute(text("CREATE SCHEMA public"))
        await history.close()


async def test_writes_are_upserts_safe_to_repeat(store: HistoryStore) -> None:
    """A snapshot written twice (a retried batch) updates the row; turns do not double."""
    await store.write([session_row("s1")], [turn_row("s1", 1, "hello")])
    await store.write([session_row("s1", turns=3)], [turn_row("s1", 1, "hello")])
    found = await store.get_session("s1")
    assert found is not None
    row, said = found
    assert row["turns"] == 3 and [t["text"] for t in said] == ["hello"]


async def test_listing_is_newest_first_with_filters_and_pages(store: HistoryStore) -> None:
    now = utcnow()
    rows = [
        session_row(f"s{i}", started_at=now - timedelta(minutes=10 - i),
                    end_reason="idle-timeout" if i % 2 else "client-disconnected",
                    ended_at=now)
        for i in range(5)
    ]  # fmt: skip
    await store.write(rows, [])
    page, total = await store.list_sessions(limit=2)
    assert [r["id"] for r in page] == ["s4", "s3"] and total == 5
    page, total = await store.list_sessions(limit=2, offset=4)
    assert [r["id"] for r in page] == ["s0"]
    page, total = await store.list_sessions(end_reason="idle-timeout")
    assert [r["id"] for r in page] == ["s3", "s1"] and total == 2
    page, total = await store.list_sessions(since=now - timedelta(minutes=7, seconds=30))
    assert [r["id"] for r in page] == ["s4", "s3"]


async def test_sessions_a_replica_never_closed_are_marked_lost(store: HistoryStore) -> None:
    """Only the given replica's open sessions become server-lost; closed ones keep theirs."""
    await store.write(
        [session_row("open"), session_row("closed", end_reason="idle-timeout", ended_at=utcnow()),
         session_row("other", replica="r2")],
        [],
    )  # fmt: skip
    assert await store.mark_lost(["r1"]) == 1
    reasons = {r["id"]: r["end_reason"] for r in (await store.list_sessions())[0]}
    assert reasons == {"open": SERVER_LOST, "closed": "idle-timeout", "other": None}


async def test_purge_deletes_sessions_and_turns_past_the_retention(store: HistoryStore) -> None:
    old = session_row("old", started_at=utcnow() - timedelta(days=40))
    await store.write([old, session_row("new")], [turn_row("old", 1, "x"), turn_row("new", 1, "y")])
    assert await store.purge(30) == 1
    assert await store.get_session("old") is None
    async with store.engine.connect() as connection:
        left = await connection.execute(text("SELECT session_id FROM turns"))
        assert left.scalars().all() == ["new"]


def test_lost_replicas_are_this_one_and_dead_default_named_ones() -> None:
    import os
    import socket

    host = socket.gethostname()
    dead = f"{host}-999999999"
    alive = f"{host}-{os.getpid()}"
    assert lost_replicas("me", ["me", dead, alive, "elsewhere-1"]) == ["me", dead]


def test_a_bad_database_url_is_refused_without_showing_it() -> None:
    with pytest.raises(DatabaseUrlError) as refused:
        HistoryStore("mysql://admin:hunter2@db/x")
    assert "hunter2" not in str(refused.value) and "sqlite+aiosqlite" in str(refused.value)
    with pytest.raises(DatabaseUrlError) as refused:
        HistoryStore("not a url hunter2")
    assert "hunter2" not in str(refused.value)


async def test_rows_wait_while_the_database_is_locked_and_overflow_is_counted(
    tmp_path: Path,
) -> None:
    """SQLite held by another writer: rows wait in the queue (the newest beyond its bound
    dropped, counted and logged once), then all that waited are written."""
    path = tmp_path / "history.db"
    store = HistoryStore(f"sqlite+aiosqlite:///{path}")
    registry = CollectorRegistry()
    writer = HistoryWriter(store, WriterOptions("r1", queue_size=4), HistoryMetrics(registry))
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(m.record["message"]), level="WARNING")
    writer.start()
    try:
        await asyncio.wait_for(writer.ready.wait(), 30)
        holder = sqlite3.connect(path, timeout=30)
        holder.execute("BEGIN EXCLUSIVE")
        writer.put_session(session_row("s1"))
        for seq in range(1, 6):
            writer.put_turn(turn_row("s1", seq, f"turn {seq}"))
        writer.put_session(session_row("s1", turns=5))  # replaces the waiting snapshot
        await asyncio.sleep(6)  # longer than SQLite's busy timeout: the write fails
        assert registry.get_sample_value("talkline_history_dropped_total") == 2
        assert writer.waiting() == 4
        holder.rollback()
        holder.close()
        await asyncio.wait_for(writer.flushed(), 30)
    finally:
        await writer.stop()
        logger.remove(sink)
    check = HistoryStore(f"sqlite+aiosqlite:///{path}")
    found = await check.get_session("s1")
    await check.close()
    assert found is not None
    row, said = found
    assert row["turns"] == 5 and [t["seq"] for t in said] == [1, 2, 3]
    assert sum("queue full" in w for w in warnings) == 1
    assert sum("unavailable" in w for w in warnings) == 1


async def test_the_writer_purges_expired_sessions_itself(tmp_path: Path) -> None:
    """Started with a retention, the writer deletes what is older, unasked."""
    store = HistoryStore(f"sqlite+aiosqlite:///{tmp_path / 'history.db'}")
    await store.migrate()
    await store.write([session_row("old", started_at=utcnow() - timedelta(days=8))], [])
    writer = HistoryWriter(
        store, WriterOptions("r1", retention_days=7), HistoryMetrics(CollectorRegistry())
    )
    writer.start()
    try:
        async with asyncio.timeout(30):
            while await store.get_session("old") is not None:
                await asyncio.sleep(0.1)
    finally:
        await writer.stop()


async def test_the_migrations_build_exactly_the_schema_the_code_describes(
    store: HistoryStore,
) -> None:
    """Alembic's migrations and ``tables.py`` describe the schema twice: after every migration,
    Alembic's own comparison finds no column, index or table that one has and the other lacks
    (a change to one of them without the other fails here)."""

    def differences(sync: Connection) -> list[object]:
        context = MigrationContext.configure(sync)
        return [
            diff
            for diff in compare_metadata(context, metadata)
            if not (diff[0] == "remove_table" and diff[1].name == "alembic_version")
        ]

    async with store.engine.connect() as connection:
        assert await connection.run_sync(differences) == []
