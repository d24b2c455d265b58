"""Alembic's entry point: talkline runs it in-process on the connection it is handed."""

from __future__ import annotations

from alembic import context

from talkline.history.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
