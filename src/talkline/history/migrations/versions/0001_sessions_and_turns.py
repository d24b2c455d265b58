"""Sessions and their turns.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("replica", sa.String(255), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("duration_secs", sa.Float(), nullable=True),
        sa.Column("end_reason", sa.String(40), nullable=True),
        sa.Column("brain", sa.String(40), nullable=False),
        sa.Column("about", sa.JSON(), nullable=False),
        sa.Column("api_key_id", sa.String(64), nullable=True),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("turns", sa.Integer(), nullable=False),
        sa.Column("latency_p50_ms", sa.Float(), nullable=True),
        sa.Column("latency_p95_ms", sa.Float(), nullable=True),
        sa.Column("upstream_reconnects", sa.Integer(), nullable=False),
        sa.Column("resumes", sa.Integer(), nullable=False),
        sa.Column("llm_tokens", sa.Integer(), nullable=False),
        sa.Column("bad_inputs", sa.Integer(), nullable=False),
    )
    op.create_index("ix_sessions_started_at", "sessions", ["started_at"])
    op.create_index("ix_sessions_replica_ended", "sessions", ["replica", "ended_at"])
    op.create_table(
        "turns",
        sa.Column("session_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("interrupted", sa.Boolean(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("turns")
    op.drop_index("ix_sessions_replica_ended", "sessions")
    op.drop_index("ix_sessions_started_at", "sessions")
    op.drop_table("sessions")
