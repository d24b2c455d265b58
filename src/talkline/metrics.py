"""Prometheus metrics for GET /metrics, one registry per app (so tests can run several)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
LOOP_LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
LOOP_PROBE_SECS = 0.25  # how often the loop's lateness is measured


class Metrics:
    """talkline's counters; sessions report into them, /metrics renders them."""

    def __init__(self, active_sessions: Callable[[], int]):
        self.registry = CollectorRegistry()
        registry = self.registry
        self.active = Gauge("talkline_sessions_active", "Live sessions.", registry=registry)
        self.active.set_function(active_sessions)
        self.ended = Counter(
            "talkline_sessions_ended", "Sessions ended, by reason.", ["reason"], registry=registry
        )
        self.refused = Counter(
            "talkline_sessions_refused", "Connections refused, by reason.", ["reason"],
            registry=registry,
        )  # fmt: skip
        self.turns = Counter("talkline_turns", "Bot answers started.", registry=registry)
        self.latency = Histogram(
            "talkline_response_latency_seconds",
            "End of the user's speech to the first bot audio leaving the pipeline.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.reconnects = Counter(
            "talkline_upstream_reconnects", "Upstream (Gemini) reconnects.", registry=registry
        )
        self.errors = Counter("talkline_errors", "Errors, by kind.", ["kind"], registry=registry)
        self.audio_frames = Counter(
            "talkline_audio_frames", "Audio frames, by direction.", ["direction"],
            registry=registry,
        )  # fmt: skip
        self.tokens = Counter("talkline_llm_tokens", "LLM tokens used.", registry=registry)
        self.quiet_not_sent = Counter(
            "talkline_upstream_quiet_not_sent_seconds",
            "Seconds of the users' quiet audio not sent to Gemini: the upstream pauses while "
            "nobody speaks (TALKLINE_GEMINI_PAUSE_AFTER_QUIET_SECS).",
            registry=registry,
        )
        self.loop_lag = Histogram(
            "talkline_event_loop_lag_seconds",
            "How late this process's event loop ran a timer that was due: every session of the "
            "process waits as long. Past 0.02 s at p95 the process is full (see README, Sizing).",
            buckets=LOOP_LAG_BUCKETS,
            registry=registry,
        )

    async def watch_loop(self, every: float = LOOP_PROBE_SECS) -> None:
        """Measure, every ``every`` seconds, how late the running loop wakes a sleeper."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + every
            await asyncio.sleep(every)
            self.loop_lag.observe(max(0.0, loop.time() - due))

    def turn(self, latency: float | None) -> None:
        self.turns.inc()
        if latency is not None:
            self.latency.observe(latency)

    def render(self) -> bytes:
        return generate_latest(self.registry)
