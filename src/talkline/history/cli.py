"""``talkline sessions`` and ``talkline sessions ID``: the history in words, from the database.

It reads the database the server writes (the same settings: TALKLINE_DATABASE_URL, or the
SQLite file in TALKLINE_DATA_DIR), so it works while the server is down too.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the database's modules load only when a command runs
    from talkline.history.models import SessionDetail, SessionPage, SessionSummary

EXIT_USAGE = 2
NOT_FOUND = 1


def add_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("id", nargs="?", help="one session: its record and transcript")
    command.add_argument("--since", type=datetime.fromisoformat, help="started at or after (ISO)")
    command.add_argument("--end-reason", help="e.g. idle-timeout, server-lost, live")
    command.add_argument("--replica", help="only this replica's sessions")
    command.add_argument("--limit", type=int, default=20)
    command.add_argument("--offset", type=int, default=0)
    command.add_argument("--json", action="store_true", help="what GET /sessions answers")


def clock(moment: datetime | None, *, date: bool = True) -> str:
    if moment is None:
        return "-"
    return moment.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S")


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def page_in_words(page: SessionPage) -> str:
    if not page.sessions:
        return "no sessions"
    header = f"{'STARTED (UTC)':<19}  {'DURATION':>8}  {'END REASON':<19}  TURNS  {'P50':>8}  "
    lines = [header + f"{'CLIENT':<15}  ID"]
    lines += [summary_line(session) for session in page.sessions]
    shown = f"{page.offset + 1}-{page.offset + len(page.sessions)} of {page.total}"
    more = f"; next: --offset {page.next_offset}" if page.next_offset is not None else ""
    return "\n".join([*lines, f"({shown}{more})"])


def summary_line(s: SessionSummary) -> str:
    duration = "live" if s.duration_secs is None else f"{s.duration_secs:.1f} s"
    reason = s.end_reason or "(live)"
    return (
        f"{clock(s.started_at):<19}  {duration:>8}  {reason:<19}  {s.turns:>5}  "
        f"{ms(s.latency_p50_ms):>8}  {s.client:<15}  {s.id}"
    )


def detail_in_words(s: SessionDetail) -> str:
    stages = " ".join(f"{k}={v}" for k, v in s.about.items() if k not in ("brain", "note"))
    ended = (
        f"ended {clock(s.ended_at)} after {s.duration_secs or 0:.1f} s: {s.end_reason}"
        if s.ended_at
        else "still live"
    )
    lines = [
        f"session {s.id} on {s.replica}",
        f"  started {clock(s.started_at)} UTC, {ended}",
        f"  brain {s.brain} ({stages}); client {s.client}; API key {s.api_key_id or 'none'}",
        f"  {s.turns} answers, latency p50 {ms(s.latency_p50_ms)} p95 {ms(s.latency_p95_ms)}; "
        f"upstream reconnects {s.upstream_reconnects}, resumes {s.resumes}, "
        f"LLM tokens {s.llm_tokens}, bad inputs {s.bad_inputs}",
        "transcript:" if s.transcript else "no transcript (none kept, or nothing said)",
    ]
    for turn in s.transcript:
        notes = " (interrupted)" if turn.interrupted else ""
        notes += f" [{ms(turn.latency_ms)}]" if turn.latency_ms is not None else ""
        lines.append(f"  {clock(turn.at, date=False)}  {turn.role:<4}  {turn.text}{notes}")
    return "\n".join(lines)


async def show(url: str, args: argparse.Namespace) -> str | None:
    from talkline.history.models import read_page, read_session
    from talkline.history.store import HistoryStore

    store = HistoryStore(url)
    try:
        await store.migrate()  # a fresh data dir: an empty history, not an error
        if args.id:
            found = await read_session(store, args.id)
            if found is None:
                return None
            return found.model_dump_json(indent=2) if args.json else detail_in_words(found)
        page = await read_page(
            store,
            since=args.since,
            end_reason=args.end_reason,
            replica=args.replica,
            limit=args.limit,
            offset=args.offset,
        )
        return page.model_dump_json(indent=2) if args.json else page_in_words(page)
    finally:
        await store.close()


def run(url: str, args: argparse.Namespace) -> int:
    from sqlalchemy.exc import DBAPIError

    from talkline.history.models import UnknownEndReason
    from talkline.history.store import DatabaseUrlError

    try:
        shown = asyncio.run(show(url, args))
    except (DatabaseUrlError, UnknownEndReason) as error:
        print(f"talkline sessions: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (DBAPIError, OSError) as error:
        reason = getattr(error, "orig", None) or error
        print(f"talkline sessions: the history database is unavailable: {reason}", file=sys.stderr)
        return 1
    if shown is None:
        print(f"talkline sessions: no session {args.id!r} in the history", file=sys.stderr)
        return NOT_FOUND
    print(shown)
    return 0
