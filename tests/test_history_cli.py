"""``talkline sessions``: the history in words (and as the API's JSON), read from the database."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from talkline.history.store import HistoryStore, utcnow
from tests.history_support import session_row, turn_row
from tests.test_config import run_cli


async def fill(data_dir: Path) -> None:
    store = HistoryStore(f"sqlite+aiosqlite:///{data_dir / 'history.db'}")
    await store.migrate()
    now = utcnow()
    ended: dict[str, Any] = {
        "ended_at": now,
        "duration_secs": 42.5,
        "turns": 1,
        "latency_p50_ms": 612.0,
    }
    bot = turn_row("cut-off", 2, "It is sunny in") | {"role": "bot", "interrupted": True}
    await store.write(
        [
            session_row("cut-off", started_at=now - timedelta(minutes=5), end_reason="idle-timeout",
                        api_key_id="key-1", **ended),
            session_row("older", started_at=now - timedelta(hours=2)),
        ],
        [turn_row("cut-off", 1, "What is the weather?"), bot | {"latency_ms": 612.0}],
    )  # fmt: skip
    await store.close()


async def test_sessions_lists_newest_first_and_shows_one_with_its_transcript(
    tmp_path: Path,
) -> None:
    """The list names each session's reason; one session reads as record plus transcript."""
    await fill(tmp_path)
    env = {"TALKLINE_DATA_DIR": str(tmp_path)}
    listing = run_cli("sessions", env=env)
    one = run_cli("sessions", "cut-off", env=env)
    as_json = run_cli("sessions", "--end-reason", "idle-timeout", "--json", env=env)
    unknown = run_cli("sessions", "--end-reason", "bored", env=env)
    missing = run_cli("sessions", "nope", env=env)

    assert listing.returncode == 0, listing.stderr
    rows = listing.stdout.splitlines()
    assert "cut-off" in rows[1] and "idle-timeout" in rows[1] and "612 ms" in rows[1]
    assert "older" in rows[2] and "(live)" in rows[2] and "1-2 of 2" in rows[3]
    assert one.returncode == 0, one.stderr
    assert "ended" in one.stdout and "idle-timeout" in one.stdout and "key-1" in one.stdout
    assert "user  What is the weather?" in one.stdout
    assert "bot   It is sunny in (interrupted) [612 ms]" in one.stdout
    page = json.loads(as_json.stdout)
    assert [s["id"] for s in page["sessions"]] == ["cut-off"] and page["total"] == 1
    assert unknown.returncode == 2 and "unknown end_reason" in unknown.stderr
    assert missing.returncode == 1 and "no session 'nope'" in missing.stderr
