"""Session history: every session's record and transcript, kept in a database.

``service.History`` ties the parts together for the app: the store (``store.py``: SQLAlchemy,
Alembic), the writer task with its bounded queue (``writer.py``), and one
``SessionHistory`` observer per session (``recorder.py``). ``api.py`` serves it as
``/sessions``; ``cli.py`` prints it.
"""
