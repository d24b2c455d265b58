"""The history database: its engine, its migrations, and every statement talkline runs on it.

SQLAlchemy's async engine over ``sqlite+aiosqlite`` (default) or ``postgresql+asyncpg``.
Alembic migrations ship in this package and run in-process at start, under a lock so that
worker processes or replicas starting together migrate once. Statements never carry their
parameters into error messages (``hide_parameters``): they hold what users said.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, event, func, inspect, select, text, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from talkline.history.tables import sessions, turns
from talkline.lifecycle import SERVER_LOST

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration. A database already there skips Alembic, whose import and run were
# about 0.3 s of every start; tests/test_history_store.py checks this is Alembic's head.
HEAD_REVISION = "0001"
PG_MIGRATION_LOCK = 0x7A1C_1E5  # any constant: one advisory lock for every replica


def utcnow() -> datetime:
    """Now as the history stores it: naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def alembic_config(connection: Connection) -> Config:
    from alembic.config import Config  # only when a migration runs

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def revisions(connection: Connection) -> list[str]:
    """The revisions Alembic recorded in this database (none for a new one)."""
    if not inspect(connection).has_table("alembic_version"):
        return []
    return list(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())


DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")


class DatabaseUrlError(ValueError):
    """TALKLINE_DATABASE_URL cannot be used; ``str()`` says why without the URL (a secret)."""


def database_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseUrlError("TALKLINE_DATABASE_URL is not a database URL") from None
    if parsed.drivername not in DRIVERS:
        raise DatabaseUrlError(
            f"TALKLINE_DATABASE_URL: the history needs one of {', '.join(DRIVERS)}, "
            f"not {parsed.drivername}"
        )
    return parsed


def write_ahead_log(connection: Any, _record: Any) -> None:
    """SQLite in WAL mode: readers (the API, the CLI) never wait for the writer."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class HistoryStore:
    """One database of session records and turns."""

    def __init__(self, url: str):
        self.url = database_url(url)
        self.engine: AsyncEngine = create_async_engine(
            self.url, hide_parameters=True, pool_pre_ping=True, **self._engine_options()
        )
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", write_ahead_log)

    def _engine_options(self) -> dict[str, Any]:
        if self.is_sqlite:
            # Wait for a writer holding the file rather than failing at once.
            return {"connect_args": {"timeout": 5}}
        return {"pool_size": 2, "max_overflow": 2, "connect_args": {"timeout": 5}}

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @property
    def where(self) -> str:
        """The database, for logs: its password hidden."""
        return self.url.render_as_string(hide_password=True)

    async def close(self) -> None:
        await self.engine.dispose()

    # --- migrations ------------------------------------------------------------------------
    async def migrate(self) -> None:
        """Bring the schema to the newest revision; a no-op when it is there already."""
        if self.is_sqlite:
            lock = await asyncio.to_thread(self._lock_sqlite_file)
            try:
                await self._migrate()
            finally:
                lock.close()  # releases the lock
        else:
            await self._migrate()

    async def _migrate(self) -> None:
        async with self.engine.begin() as connection:
            if not self.is_sqlite:
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK}
                )
            if await connection.run_sync(revisions) == [HEAD_REVISION]:
                return  # there already
            from alembic import command  # only when there is something to do

            await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), "head"))

    def _sqlite_path(self) -> Path | None:
        database = self.url.database
        return Path(database) if database and database != ":memory:" else None

    def _lock_sqlite_file(self) -> IO[str]:
        """Make the file's directory, then hold a lock beside it: one migration at a time."""
        path = self._sqlite_path()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(f"{path}.migrate-lock" if path else os.devnull, "w")  # noqa: SIM115
        fcntl.flock(lock, fcntl.LOCK_EX)
        return lock

    # --- writes ----------------------------------------------------------------------------
    async def write(
        self, session_rows: Iterable[dict[str, Any]], turn_rows: Iterable[dict[str, Any]]
    ):
        """Upsert session snapshots and turns in one transaction (safe to repeat)."""
        async with self.engine.begin() as connection:
            for row in session_rows:
                await upsert(connection, sessions, row, ("id",))
            for row in turn_rows:
                await upsert(connection, turns, row, ("session_id", "seq"))

    async def mark_lost(self, replicas: Sequence[str]) -> int:
        """Sessions of ``replicas`` never closed: ended now, reason ``server-lost``."""
        if not replicas:
            return 0
        now = utcnow()
        statement = (
            update(sessions)
            .where(sessions.c.replica.in_(replicas), sessions.c.ended_at.is_(None))
            .values(ended_at=now, end_reason=SERVER_LOST)
        )
        async with self.engine.begin() as connection:
            result = await connection.execute(statement)
        return int(result.rowcount)

    async def open_replicas(self) -> list[str]:
        """The replicas that have sessions not closed."""
        statement = select(sessions.c.replica).where(sessions.c.ended_at.is_(None)).distinct()
        async with self.engine.connect() as connection:
            return list((await connection.execute(statement)).scalars())

    async def purge(self, retention_days: float) -> int:
        """Delete sessions (and their turns) that started over ``retention_days`` ago."""
        cutoff = utcnow() - timedelta(days=retention_days)
        expired = select(sessions.c.id).where(sessions.c.started_at < cutoff)
        async with self.engine.begin() as connection:
            await connection.execute(delete(turns).where(turns.c.session_id.in_(expired)))
            result = await connection.execute(
                delete(sessions).where(sessions.c.started_at < cutoff)
            )
        return int(result.rowcount)

    # --- reads -----------------------------------------------------------------------------
    async def list_sessions(
        self,
        *,
        since: datetime | None = None,
        end_reason: str | None = None,
        replica: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """Session rows, newest first, and how many match in all."""
        conditions = []
        if since is not None:
            conditions.append(sessions.c.started_at >= since)
        if end_reason == "live":
            conditions.append(sessions.c.ended_at.is_(None))
        elif end_reason is not None:
            conditions.append(sessions.c.end_reason == end_reason)
        if replica is not None:
            conditions.append(sessions.c.replica == replica)
        page = (
            select(sessions)
            .where(*conditions)
            .order_by(sessions.c.started_at.desc(), sessions.c.id)
            .limit(limit)
            .offset(offset)
        )
        total = select(func.count()).select_from(sessions).where(*conditions)
        async with self.engine.connect() as connection:
            rows = [dict(row._mapping) for row in await connection.execute(page)]
            count = int((await connection.execute(total)).scalar_one())
        return rows, count

    async def get_session(
        self, session_id: str
    ) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """One session's row and its turns in order, or None."""
        async with self.engine.connect() as connection:
            found = await connection.execute(select(sessions).where(sessions.c.id == session_id))
            row = found.first()
            if row is None:
                return None
            said = await connection.execute(
                select(turns).where(turns.c.session_id == session_id).order_by(turns.c.seq)
            )
            return dict(row._mapping), [dict(turn._mapping) for turn in said]


async def upsert(
    connection: AsyncConnection, table: Any, row: dict[str, Any], keys: tuple[str, ...]
) -> None:
    """Update the row with these keys, or insert it: the same on SQLite and PostgreSQL."""
    where = [table.c[key] == row[key] for key in keys]
    values = {name: value for name, value in row.items() if name not in keys}
    result = await connection.execute(update(table).where(*where).values(**values))
    if result.rowcount == 0:
        await connection.execute(table.insert().values(**row))


def default_replica_name(replica: str) -> tuple[str, int] | None:
    """(host, pid) when ``replica`` is the default name ``<host>-<pid>``, else None."""
    host, _, pid = replica.rpartition("-")
    if host == socket.gethostname() and pid.isdigit():
        return host, int(pid)
    return None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lost_replicas(mine: str, open_replicas: Iterable[str]) -> list[str]:
    """The replicas whose open sessions can no longer be live: this one (it is starting)
    and, among default-named replicas of this host, those whose process is gone."""
    lost = [mine]
    for replica in open_replicas:
        named = default_replica_name(replica)
        if replica != mine and named is not None and not process_alive(named[1]):
            lost.append(replica)
    return lost
