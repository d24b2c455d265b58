"""From raw timestamps to per-turn measurements and per-run summaries.

All times are ``time.monotonic()`` seconds, taken in the bench process (clients) and in the
emulator process; on Linux both read the same CLOCK_MONOTONIC.

Per turn:
- response: the client sent the last voiced chunk → the client received the first bot audio;
- inbound: the client sent the last voiced chunk → the emulator received it (found by its tag);
- onset: the client sent the first voiced chunk → the emulator received it (while the user is
  quiet the server holds the upstream back, so the start of speech waits to be recognized);
- outbound: the emulator sent the first reply audio → the client received the first bot audio;
- gaps: the bot's audio played back in real time from its first frame; a frame arriving more
  than `GLITCH_SECS` after the audio before it has finished playing is a glitch.
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from talkline.bench.loadgen import ClientResult
from talkline.bench.speech import Plan

GLITCH_SECS = 0.1
BOT_RATE = 24000


@dataclass
class TurnMeasure:
    response: float | None = None
    inbound: float | None = None
    onset: float | None = None
    outbound: float | None = None
    glitches: int = 0
    max_gap: float = 0.0
    turn_detected: float | None = None  # end of speech → the server's user-stopped-speaking
    ttfb: dict[str, float] = field(default_factory=dict)


@dataclass
class UpstreamView:
    """What the emulator saw for one client, over all of its upstream connections."""

    arrivals: dict[int, float] = field(default_factory=dict)
    first_audio: list[float] = field(default_factory=list)


def upstream_by_client(records: list[dict[str, Any]]) -> dict[int, UpstreamView]:
    views: dict[int, UpstreamView] = defaultdict(UpstreamView)
    for record in records:
        if record["client"] is None:
            continue
        view = views[int(record["client"])]
        for seq, at in zip(record["seqs"], record["times"], strict=True):
            view.arrivals.setdefault(seq, at)
        view.first_audio += [t["first_audio_at"] for t in record["turns"] if t["first_audio_at"]]
    for view in views.values():
        view.first_audio.sort()
    return views


def playback_gaps(times: list[float], sizes: list[int]) -> tuple[int, float]:
    """Glitch count and the longest gap when the frames are played as they arrive."""
    glitches, longest = 0, 0.0
    play_end = times[0]
    for at, size in zip(times, sizes, strict=True):
        gap = at - play_end
        longest = max(longest, gap)
        glitches += gap > GLITCH_SECS
        play_end = max(play_end, at) + size / (2 * BOT_RATE)
    return glitches, longest


def measure_client(
    client: ClientResult, plan: Plan, upstream: UpstreamView | None
) -> list[TurnMeasure]:
    """One measurement per planned turn the client got to the end of."""
    measures = []
    sent = client.sent_at
    times = np.asarray(client.audio_times)
    for index, turn in enumerate(plan.turns):
        if turn.last_voiced >= len(sent):
            break
        spoke = sent[turn.last_voiced]
        following = plan.turns[index + 1].first if index + 1 < len(plan.turns) else None
        until = sent[following] if following is not None and following < len(sent) else np.inf
        lo, hi = np.searchsorted(times, [spoke, until])
        measure = TurnMeasure()
        measures.append(measure)
        note_events(measure, client.events, spoke, float(until))
        if upstream is not None and turn.last_voiced in upstream.arrivals:
            measure.inbound = upstream.arrivals[turn.last_voiced] - spoke
        if upstream is not None and turn.first_voiced in upstream.arrivals:
            measure.onset = upstream.arrivals[turn.first_voiced] - sent[turn.first_voiced]
        if hi <= lo:
            continue
        heard = float(times[lo])
        measure.response = heard - spoke
        gaps = playback_gaps(client.audio_times[lo:hi], client.audio_bytes[lo:hi])
        measure.glitches, measure.max_gap = gaps
        if upstream is not None:
            replies = [f for f in upstream.first_audio if spoke <= f <= heard]
            if replies:
                measure.outbound = heard - replies[-1]
    return measures


def note_events(
    measure: TurnMeasure,
    events: list[tuple[str, float, dict[str, Any]]],
    spoke: float,
    until: float,
) -> None:
    """When the server said the user stopped, and the services' time to first byte."""
    for kind, at, data in events:
        if not spoke <= at < until:
            continue
        if kind == "user-stopped-speaking" and measure.turn_detected is None:
            measure.turn_detected = at - spoke
        entries = (data.get("ttfb") or []) if kind == "metrics" else []
        for entry in entries:
            name = re.sub(r"#\d+$", "", str(entry.get("processor", "?")))
            measure.ttfb.setdefault(name, float(entry.get("value", 0.0)))


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50/p90/p95/p99 and max in milliseconds, or None each when there is nothing to
    summarise."""
    if not values:
        return {"p50": None, "p90": None, "p95": None, "p99": None, "max": None}
    ms = np.asarray(values) * 1000
    p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
    return {
        "p50": float(p50),
        "p90": float(p90),
        "p95": float(p95),
        "p99": float(p99),
        "max": float(ms.max()),
    }


@dataclass
class TurnTimes:
    """One turn of the plan, over the clients that got to its end: median milliseconds."""

    response_ms: float | None  # end of speech → first bot audio (None: nobody was answered)
    turn_detected_ms: float | None  # end of speech → the server's user-stopped-speaking


def by_turn(measures: list[list[TurnMeasure]], turns: int) -> list[TurnTimes]:
    """Each planned turn's times, from each client's measures (one per turn it reached)."""

    def median_ms(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return 1000 * statistics.median(known) if known else None

    found = []
    for index in range(turns):
        reached = [client[index] for client in measures if index < len(client)]
        response = median_ms([m.response for m in reached])
        found.append(TurnTimes(response, median_ms([m.turn_detected for m in reached])))
    return found


@dataclass
class TurnSummary:
    expected: int
    answered: int
    response: dict[str, float | None]
    inbound: dict[str, float | None]
    outbound: dict[str, float | None]
    glitches: int
    max_gap_ms: float
    failed_clients: int
    errors: list[str]
    turn_detected: dict[str, float | None] = field(default_factory=dict)
    ttfb_ms: dict[str, float] = field(default_factory=dict)
    onset: dict[str, float | None] = field(default_factory=dict)
    turns: list[TurnTimes] = field(default_factory=list)


def summarise(
    clients: list[ClientResult], plan: Plan, records: list[dict[str, Any]] | None
) -> TurnSummary:
    views = upstream_by_client(records) if records is not None else {}
    per_client = [
        measure_client(client, plan, views.get(client.number) if records is not None else None)
        for client in clients
    ]
    measures = [m for client in per_client for m in client]
    answered = [m for m in measures if m.response is not None]
    errors = sorted({c.error for c in clients if c.error})
    ttfb: dict[str, list[float]] = defaultdict(list)
    for m in measures:
        for name, value in m.ttfb.items():
            ttfb[name].append(value)
    return TurnSummary(
        expected=len(clients) * len(plan.turns),
        answered=len(answered),
        response=percentiles([m.response for m in answered if m.response is not None]),
        inbound=percentiles([m.inbound for m in measures if m.inbound is not None]),
        outbound=percentiles([m.outbound for m in answered if m.outbound is not None]),
        glitches=sum(m.glitches for m in answered),
        max_gap_ms=1000 * max((m.max_gap for m in answered), default=0.0),
        failed_clients=sum(1 for c in clients if c.error),
        errors=errors[:5],
        turn_detected=percentiles([m.turn_detected for m in measures if m.turn_detected]),
        ttfb_ms={name: 1000 * statistics.median(values) for name, values in ttfb.items()},
        onset=percentiles([m.onset for m in measures if m.onset is not None]),
        turns=by_turn(per_client, len(plan.turns)),
    )
