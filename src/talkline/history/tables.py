"""The history's two tables: one row per session, one row per turn of its transcript.

Times are naive UTC (SQLite keeps no zone); the API adds the zone back. Turns carry no
foreign key: a turn may reach the database before its session's row when the queue drops
or reorders under pressure, and a missing row must never block the rest of a batch.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("replica", String(255), nullable=False),
    Column("started_at", DateTime(), nullable=False),
    Column("ended_at", DateTime(), nullable=True),  # null while live (or lost, until marked)
    Column("duration_secs", Float(), nullable=True),
    Column("end_reason", String(40), nullable=True),
    Column("brain", String(40), nullable=False),
    Column("about", JSON(), nullable=False),  # the brain and stages, as bot-ready tells
    Column("api_key_id", String(64), nullable=True),  # "key-0": never the key
    Column("client", String(64), nullable=False),
    Column("turns", Integer(), nullable=False, default=0),
    Column("latency_p50_ms", Float(), nullable=True),
    Column("latency_p95_ms", Float(), nullable=True),
    Column("upstream_reconnects", Integer(), nullable=False, default=0),
    Column("resumes", Integer(), nullable=False, default=0),
    Column("llm_tokens", Integer(), nullable=False, default=0),
    Column("bad_inputs", Integer(), nullable=False, default=0),
    Index("ix_sessions_started_at", "started_at"),
    Index("ix_sessions_replica_ended", "replica", "ended_at"),
)

turns = Table(
    "turns",
    metadata,
    Column("session_id", String(64), primary_key=True),
    Column("seq", Integer(), primary_key=True),
    Column("role", String(8), nullable=False),  # "user" or "bot"
    Column("at", DateTime(), nullable=False),
    Column("text", Text(), nullable=False),
    Column("interrupted", Boolean(), nullable=False, default=False),
    Column("latency_ms", Float(), nullable=True),  # bot turns: end of user speech to audio
)
