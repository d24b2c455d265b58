"""One conversation: a WebSocket, a Pipecat pipeline, and the rules that end it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

import pipecat.processors.frameworks.rtvi.models as RTVI
from fastapi import WebSocket
from loguru import logger
from pipecat.frames.frames import LLMRunFrame
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frameworks.rtvi import RTVIProcessor
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner
from starlette import status

from talkline import __version__
from talkline.admission import SessionRecord
from talkline.config import Settings
from talkline.metrics import Metrics
from talkline.observer import SessionObserver
from talkline.pipelines.build import SessionHooks, build_pipeline
from talkline.resources import SharedResources
from talkline.transport import GuardedSerializer, InputLimits, SessionSocket

NORMAL = status.WS_1000_NORMAL_CLOSURE
GOING_AWAY = status.WS_1001_GOING_AWAY
POLICY = status.WS_1008_POLICY_VIOLATION
END_GRACE_SECS = 5.0
DRAIN_POLL_SECS = 0.1


def input_limits(settings: Settings) -> InputLimits:
    return InputLimits(
        sample_rate=settings.audio_in_rate,
        max_message_bytes=settings.max_message_bytes,
        max_audio_rate=settings.max_audio_rate,
        audio_burst_secs=settings.audio_burst_secs,
        max_messages_per_second=settings.max_messages_per_second,
    )


class TalklineRTVIProcessor(RTVIProcessor):
    """RTVI with talkline's own ``about`` in ``bot-ready``."""

    def __init__(self, about: Mapping[str, Any]):
        super().__init__()
        self._about = dict(about)

    async def set_bot_ready(self, about: Mapping[str, Any] | None = None) -> None:
        await super().set_bot_ready(about or self._about)


def describe_brain(settings: Settings) -> dict[str, str]:
    stages = {"stt": settings.effective_stt, "tts": settings.effective_tts}
    if settings.effective_brain == "gemini":
        return {"brain": "gemini", "model": settings.gemini_model} | stages
    responder = settings.effective_responder
    about = {"brain": "local", "responder": responder} | stages
    if responder == "echo":
        about["note"] = "echo responder: answers with what it heard (set TALKLINE_LLM_BASE_URL)"
    return about


class Session:
    """Runs one session's pipeline and ends it for a reason the client is told."""

    def __init__(
        self,
        record: SessionRecord,
        websocket: WebSocket,
        settings: Settings,
        shared: SharedResources,
        metrics: Metrics,
    ):
        self.record = record
        self.settings = settings
        self.metrics = metrics
        self.about = {"library": "talkline", "library_version": __version__}
        self.about |= describe_brain(settings) | {"session_id": record.id}
        self.rtvi = TalklineRTVIProcessor(self.about)
        self.observer = SessionObserver(settings.vad_stop_secs)
        self.observer.on_turn = metrics.turn
        self.socket = SessionSocket(
            websocket, write_timeout=settings.write_timeout, on_stalled=self._client_stalled
        )
        self.serializer = GuardedSerializer(
            limits=input_limits(settings), report=self.rtvi.send_error, violate=self._violation
        )
        self.transport = FastAPIWebsocketTransport(
            self.socket,  # type: ignore[arg-type]
            FastAPIWebsocketParams(
                audio_in_enabled=True,
                audio_out_enabled=True,
                serializer=self.serializer,
                allowed_origins=[],
            ),
        )
        hooks = SessionHooks(on_fatal=self.fail, on_reconnect=metrics.reconnects.inc)
        built = build_pipeline(settings, self.transport, shared, hooks)
        self.upstream = built.upstream
        self.worker = PipelineWorker(
            built.pipeline,
            params=PipelineParams(
                audio_in_sample_rate=settings.audio_in_rate,
                audio_out_sample_rate=settings.audio_out_rate,
                enable_metrics=True,
                enable_usage_metrics=True,
            ),
            rtvi_processor=self.rtvi,
            observers=[self.observer],
            idle_timeout_secs=settings.idle_timeout,
            cancel_on_idle_timeout=False,
            conversation_id=record.id,
            enable_turn_tracking=False,  # an observer talkline does not use, on every frame
        )
        self._client_ready = asyncio.Event()
        self._ending: asyncio.Task[None] | None = None
        record.drain = self.drain
        self._register_handlers()

    def _register_handlers(self) -> None:
        @self.transport.event_handler("on_client_disconnected")
        async def on_client_disconnected(_transport: Any, _websocket: Any) -> None:
            await self.worker.cancel(reason="client disconnected")

        @self.rtvi.event_handler("on_client_ready")
        async def on_client_ready(_rtvi: Any) -> None:
            self._client_ready.set()
            if self.settings.effective_brain == "gemini":
                # Gemini streams the user's audio only once the context has reached it.
                await self.worker.queue_frame(LLMRunFrame())

        @self.worker.event_handler("on_idle_timeout")
        async def on_idle_timeout(_worker: Any) -> None:
            minutes = self.settings.idle_timeout / 60
            self.end(
                "idle-timeout",
                f"Nothing was said for {minutes:g} minutes, so the session was closed.",
            )

    async def run(self) -> None:
        brain = " ".join(f"{k}={v}" for k, v in describe_brain(self.settings).items())
        logger.info(f"session started from {self.record.client} ({brain})")
        timers = [
            asyncio.create_task(self._session_timer(), name=f"timeout-{self.record.id}"),
            asyncio.create_task(self._ready_timer(), name=f"ready-{self.record.id}"),
        ]
        runner = WorkerRunner(handle_sigint=False)
        try:
            await runner.add_workers(self.worker)
            await runner.run()
        finally:
            for task in [*timers, self._ending]:
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await self.socket.close()
            self._report()

    async def _session_timer(self) -> None:
        await asyncio.sleep(self.settings.session_timeout)
        minutes = self.settings.session_timeout / 60
        self.end("session-timeout", f"The session reached its {minutes:g} minute limit.")

    async def _ready_timer(self) -> None:
        try:
            await asyncio.wait_for(self._client_ready.wait(), self.settings.ready_timeout)
        except TimeoutError:
            wait = self.settings.ready_timeout
            self.end("no-client-ready", f"No client-ready within {wait:g} s.", POLICY)

    async def _violation(self, problem: str) -> None:
        await self.rtvi.send_error(f"Closing the session: {problem}.")
        self.end("policy-violation", problem, POLICY)

    def _client_stalled(self) -> None:
        self.end("client-not-reading", "the client stopped reading", POLICY, notify=False)

    async def fail(self, message: str) -> None:
        """An upstream failure the session cannot recover from: a fatal RTVI error, then close."""
        await self.rtvi.push_transport_message(
            RTVI.Error(data=RTVI.ErrorData(error=message, fatal=True))
        )
        self.end("upstream-error", message, code=status.WS_1011_INTERNAL_ERROR)

    async def drain(self, deadline: float) -> None:
        """Server shutdown: tell the client, let the current turn finish, then close 1001."""
        message = "The server is shutting down; this session ends after the current answer."
        with logger.contextualize(session_id=self.record.id):
            await self._notify("server-shutdown", message)
            loop = asyncio.get_running_loop()
            while self.observer.busy() and loop.time() < deadline:
                await asyncio.sleep(DRAIN_POLL_SECS)
            self.end("server-shutdown", "server shutting down", GOING_AWAY, notify=False)

    def end(self, reason: str, message: str, code: int = NORMAL, *, notify: bool = True) -> None:
        """Tell the client why (unless ``notify`` is false), then close with ``code``; once."""
        if self._ending is None:
            self._ending = asyncio.create_task(self._end(reason, message, code, notify))

    async def _end(self, reason: str, message: str, code: int, notify: bool) -> None:
        logger.info(f"ending session: {reason}")
        self.record.end_reason = reason
        self.socket.set_close(code, f"{reason}: {message}")
        if notify:
            await self._notify(reason, message)
        try:
            await asyncio.wait_for(self.worker.end(reason=reason), END_GRACE_SECS)
        except TimeoutError:
            await self.worker.cancel(reason=reason)

    async def _notify(self, reason: str, message: str) -> None:
        await self.rtvi.send_server_message(
            {"type": "session-ending", "reason": reason, "message": message}
        )

    def _report(self) -> None:
        """One summary line per session, and the counters for /metrics."""
        observer, serializer, metrics = self.observer, self.serializer, self.metrics
        reconnects = self.upstream.reconnects if self.upstream else 0
        logger.info(
            f"session summary: reason={self.record.end_reason} "
            f"duration={self.record.duration:.1f}s turns={observer.turns} "
            f"{observer.latency_summary()} reconnects={reconnects} tokens={observer.tokens} "
            f"bad_inputs={serializer.bad_inputs}"
        )
        metrics.ended.labels(self.record.end_reason).inc()
        metrics.audio_frames.labels("in").inc(serializer.audio_in)
        metrics.audio_frames.labels("out").inc(serializer.audio_out)
        metrics.tokens.inc(observer.tokens)
        if serializer.bad_inputs:
            metrics.errors.labels("bad-input").inc(serializer.bad_inputs)
        for kind, count in observer.errors.items():
            metrics.errors.labels(kind).inc(count)
