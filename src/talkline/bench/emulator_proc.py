"""The Gemini emulator in its own process, recording when each tagged user chunk arrived.

Run as ``python -m talkline.bench.emulator_proc --records FILE``: it prints one JSON line
``{"base_url": ..., "ca_file": ...}``, serves until its stdin closes, then writes what it
saw to FILE. Its timestamps are ``time.monotonic()``, the same clock as the bench's on Linux.
A process of its own keeps the emulator's work off the clients' event loop and lets the
bench report the emulator's CPU apart from the clients'.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from talkline.bench.speech import find_tags
from talkline.emulator import GeminiEmulator
from talkline.emulator.connection import LiveConnection


@dataclass
class Arrivals:
    """Which client a connection serves and when each of its tagged chunks arrived."""

    client: int | None = None
    seqs: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)


class TaggedSession(LiveConnection):
    """An emulator session that notes the tags in the user audio before handling it."""

    arrivals: Arrivals

    async def _on_audio(self, pcm: bytes, mime: str) -> None:
        now = time.monotonic()
        for client, seq in find_tags(pcm):
            self.arrivals.client = client
            self.arrivals.seqs.append(seq)
            self.arrivals.times.append(now)
        await super()._on_audio(pcm, mime)


class BenchEmulator(GeminiEmulator):
    """`GeminiEmulator` whose sessions record tag arrivals."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.arrivals: list[Arrivals] = []

    session_class = TaggedSession

    def _session_started(self, session: LiveConnection) -> None:
        assert isinstance(session, TaggedSession)
        session.arrivals = Arrivals()
        self.arrivals.append(session.arrivals)

    def records(self) -> list[dict[str, Any]]:
        """One entry per connection: its client, tag arrivals and turn timestamps."""
        return [
            {
                "client": arrivals.client,
                "seqs": arrivals.seqs,
                "times": arrivals.times,
                "turns": [
                    {
                        "ended_at": turn.ended_at,
                        "first_audio_at": turn.first_audio_at,
                        "completed_at": turn.completed_at,
                    }
                    for turn in record.turns
                ],
            }
            for record, arrivals in zip(self.connections, self.arrivals, strict=True)
        ]


async def serve(records: Path, options: dict[str, Any]) -> None:
    emulator = BenchEmulator(**options)
    async with emulator:
        print(json.dumps({"base_url": emulator.base_url, "ca_file": str(emulator.ca_file)}))
        sys.stdout.flush()
        await asyncio.to_thread(sys.stdin.read)  # until the bench closes our stdin
        await asyncio.to_thread(records.write_text, json.dumps(emulator.records()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m talkline.bench.emulator_proc")
    parser.add_argument("--records", type=Path, required=True, help="where to write records")
    parser.add_argument("--response-delay", type=float, default=0.0)
    parser.add_argument("--reply-seconds", type=float, default=1.2)
    parser.add_argument("--pace", type=float, default=0.0, help="0 = all reply audio at once")
    parser.add_argument("--silence-ms", type=float, default=500.0)
    args = parser.parse_args(argv)
    options = {
        "response_delay": args.response_delay,
        "reply_seconds": args.reply_seconds,
        "pace": args.pace,
        "silence_ms": args.silence_ms,
        "models": None,  # the baseline bot sends Pipecat's default model name
        "record_messages": False,
    }
    import uvloop

    logger.remove()  # the bench reads the emulator's records, not its log
    logger.add(sys.stderr, level="WARNING")
    uvloop.run(serve(args.records, options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
