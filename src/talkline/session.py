"""One conversation: a WebSocket, a Pipecat pipeline, and the rules that end it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pipecat.processors.frameworks.rtvi.models as RTVI
from fastapi import WebSocket
from loguru import logger
from pipecat.frames.frames import LLMRunFrame
from pipecat.pipeline.worker import PipelineParams
from pipecat.processors.frameworks.rtvi import RTVIObserver, RTVIProcessor
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams
from pipecat.workers.runner import WorkerRunner

from talkline import __version__
from talkline.admission import SessionRecord
from talkline.history.recorder import SessionHistory
from talkline.lean_transport import LeanWebsocketTransport
from talkline.lifecycle import EndReason, SessionState
from talkline.metrics import Metrics
from talkline.observer import LeanPipelineWorker, SessionObserver
from talkline.pipelines.build import PipelineFactory, SessionHooks
from talkline.resumption import ResumeLink
from talkline.services.speculation import HeldAnswerRTVIObserver
from talkline.transport import GuardedSerializer, InputLimits, SessionSocket

END_GRACE_SECS = 5.0
DRAIN_POLL_SECS = 0.1
UPSTREAM_SETTLE_SECS = 15.0  # a resume waits this long for Gemini to take or refuse the handle


@dataclass(frozen=True)
class SessionOptions:
    """What a session needs to know: its limits, timeouts, audio rates and what answers."""

    about: Mapping[str, str]  # the brain and stages, for bot-ready's ``about``
    # when the session ends
    session_timeout: float = 600.0
    idle_timeout: float = 300.0
    ready_timeout: float = 30.0
    write_timeout: float = 5.0
    # what the client may send, and the audio each way
    limits: InputLimits = field(default_factory=InputLimits)
    audio_in_rate: int = 16000
    audio_out_rate: int = 24000
    # the pipeline
    vad_stop_secs: float = 0.2
    run_on_client_ready: bool = False  # Gemini hears the user only once its context is run
    replica: str = ""  # this server's name, told to resumed clients


class TalklineRTVIProcessor(RTVIProcessor):
    """RTVI with talkline's own ``about`` in ``bot-ready``, and hooks around it."""

    def __init__(
        self,
        about: Mapping[str, Any],
        before: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        after: Callable[[], Awaitable[None]] | None = None,
    ):
        super().__init__()
        self._about = dict(about)
        self._before, self._after = before, after
        self.early_answers = False  # set when the pipeline holds speculative answers

    def create_rtvi_observer(self, *, params: Any = None, **kwargs: Any) -> RTVIObserver:
        """Pipecat's observer, or, where early answers are held, one that tells the client
        of an answer only once it is released (services/speculation.py)."""
        if not self.early_answers:
            return super().create_rtvi_observer(params=params, **kwargs)
        return HeldAnswerRTVIObserver(self, params=params, **kwargs)

    async def set_bot_ready(self, about: Mapping[str, Any] | None = None) -> None:
        extra = await self._before() if self._before else {}
        await super().set_bot_ready(dict(about or self._about) | extra)
        if self._after:
            await self._after()


class Session:
    """Runs one session's pipeline and ends it for a reason the client is told."""

    def __init__(
        self,
        record: SessionRecord,
        websocket: WebSocket,
        options: SessionOptions,
        pipelines: PipelineFactory,
        metrics: Metrics,
        link: ResumeLink | None = None,
        history: SessionHistory | None = None,
    ):
        self.record = record
        self.history = history
        self.options = options
        self.metrics = metrics
        self.link = link
        self.about = {"library": "talkline", "library_version": __version__}
        self.about |= dict(options.about) | {"session_id": record.id, "replica": options.replica}
        self.rtvi = TalklineRTVIProcessor(self.about, self._before_ready, self._after_ready)
        self.observer = SessionObserver(options.vad_stop_secs)
        self.observer.on_turn = self._turn
        self.socket = SessionSocket(
            websocket, write_timeout=options.write_timeout, on_stalled=self._client_stalled
        )
        self.serializer = GuardedSerializer(
            limits=options.limits,
            report=self.rtvi.send_error,
            violate=self._violation,
            accepting=self.accepting,
        )
        self.transport = LeanWebsocketTransport(
            self.socket,
            FastAPIWebsocketParams(
                audio_in_enabled=True,
                audio_out_enabled=True,
                serializer=self.serializer,
                allowed_origins=[],
            ),
        )
        hooks = SessionHooks(on_fatal=self.fail, on_reconnect=metrics.reconnects.inc)
        if link is not None:
            hooks.handle, hooks.transcript = link.handle, link.transcript
            hooks.on_handle = link.store
            link.on_fenced = record.fence = self._taken_over
            link.last_active = lambda: self.observer.last_active
            if link.resumed is not None:  # idle since the last speech, before the drop
                earlier = link.resumed.conversation
                self.observer.last_active = earlier.last_active or earlier.started
        built = pipelines.build(self.transport, hooks)
        self.rtvi.early_answers = built.early_answers
        self.upstream = built.upstream
        self.upstream_resume = built.resume
        observers: list[Any] = [self.observer]
        if history is not None:
            self._follow(history)
            observers.append(history)
        self.worker = LeanPipelineWorker(
            built.pipeline,
            params=PipelineParams(
                audio_in_sample_rate=options.audio_in_rate,
                audio_out_sample_rate=options.audio_out_rate,
                enable_metrics=True,
                enable_usage_metrics=True,
            ),
            rtvi_processor=self.rtvi,
            observers=observers,
            idle_timeout_secs=options.idle_timeout,
            cancel_on_idle_timeout=False,
            conversation_id=record.id,
            enable_turn_tracking=False,  # an observer talkline does not use, on every frame
        )
        self._ending: asyncio.Task[None] | None = None
        record.drain = self.drain
        self._register_handlers()

    def _register_handlers(self) -> None:
        @self.transport.event_handler("on_client_disconnected")
        async def on_client_disconnected(_transport: Any, _websocket: Any) -> None:
            await self.worker.cancel(reason="client disconnected")

        @self.rtvi.event_handler("on_client_ready")
        async def on_client_ready(_rtvi: Any) -> None:
            if self.state is SessionState.AWAITING_CLIENT_READY:
                self.record.state = SessionState.ACTIVE
            if self.options.run_on_client_ready:
                await self._upstream_settled()  # a refused handle seeds the context first
                # Gemini streams the user's audio only once the context has reached it.
                await self.worker.queue_frame(LLMRunFrame())

        @self.worker.event_handler("on_idle_timeout")
        async def on_idle_timeout(_worker: Any) -> None:
            reason = EndReason.IDLE_TIMEOUT
            self.end(reason, reason.message(minutes=self.options.idle_timeout / 60))

    def _turn(self, latency: float | None) -> None:
        self.metrics.turn(latency)
        if self.history is not None:
            self.history.answered(latency)

    def _follow(self, history: SessionHistory) -> None:
        """Where the history reads this session's numbers."""
        observer, serializer, upstream = self.observer, self.serializer, self.upstream
        counters = history.counters
        counters.latencies = lambda: observer.latencies
        counters.tokens = lambda: observer.tokens
        counters.bad_inputs = lambda: serializer.bad_inputs
        counters.reconnects = lambda: upstream.reconnects if upstream else 0

    async def run(self) -> None:
        brain = " ".join(f"{k}={v}" for k, v in self.options.about.items())
        logger.info(f"session started from {self.record.client} ({brain})")
        timers = [
            asyncio.create_task(self._session_timer(), name=f"timeout-{self.record.id}"),
            asyncio.create_task(self._ready_timer(), name=f"ready-{self.record.id}"),
        ]
        if self.link is not None and self.link.resumed is not None:
            timers.append(asyncio.create_task(self._resumed_idle_timer(), name="resumed-idle"))
        runner = WorkerRunner(handle_sigint=False)
        if self.history is not None:
            self.history.started()
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

    @property
    def state(self) -> SessionState:
        return self.record.state

    def accepting(self) -> bool:
        """Whether client input still counts: not once the session is ending."""
        return self.state in (SessionState.AWAITING_CLIENT_READY, SessionState.ACTIVE)

    async def _upstream_settled(self) -> None:
        if self.upstream_resume is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.upstream_resume.settled.wait(), UPSTREAM_SETTLE_SECS)

    async def _before_ready(self) -> dict[str, Any]:
        """A resumed session says so in ``bot-ready``, once Gemini took or refused the handle."""
        if self.link is None or self.link.resumed is None:
            return {}
        await self._upstream_settled()
        resumed = self.upstream_resume.resumed if self.upstream_resume else True
        return {"resumed": resumed, "replica": self.options.replica}

    async def _after_ready(self) -> None:
        """After ``bot-ready``: the secret that resumes this conversation (a new one each time)."""
        if self.link is None or not self.accepting():
            return
        try:
            message = await self.link.open()
        except Exception as error:  # the registry's trouble: the session goes on, not resumable
            logger.warning(f"this session cannot be made resumable: {error!r}")
            return
        await self.rtvi.send_server_message(message)
        upstream = self.upstream_resume
        if upstream is not None and upstream.latest:  # a handle that came before the entry
            await self.link.store(upstream.latest, upstream.words())

    def _taken_over(self) -> None:
        reason = EndReason.TAKEN_OVER
        self.end(reason, reason.message())

    async def finish_resume(self) -> bool:
        """After the session: True when it stays resumable (an unexpected close, a move)."""
        if self.link is None:
            return False
        reason = self.record.end_reason
        resumable = await self.link.finish(reason, self.socket.client_close_code)
        upstream = self.upstream_resume
        if resumable and upstream is not None and upstream.latest:  # the last answer's words
            await self.link.store(upstream.latest, upstream.words())
        return resumable

    async def _session_timer(self) -> None:
        # A resumed conversation keeps counting from its first connection.
        started = self.link.started if self.link else time.time()
        await asyncio.sleep(max(0.0, self.options.session_timeout - (time.time() - started)))
        reason = EndReason.SESSION_TIMEOUT
        self.end(reason, reason.message(minutes=self.options.session_timeout / 60))

    async def _resumed_idle_timer(self) -> None:
        """A resumed conversation's idle time counts from the last speech before the drop
        (Pipecat's idle timer starts afresh with the pipeline): end it when that runs out."""
        while (left := self.observer.last_active + self.options.idle_timeout - time.time()) > 0:
            await asyncio.sleep(left)
        reason = EndReason.IDLE_TIMEOUT
        self.end(reason, reason.message(minutes=self.options.idle_timeout / 60))

    async def _ready_timer(self) -> None:
        await asyncio.sleep(self.options.ready_timeout)
        if self.state is SessionState.AWAITING_CLIENT_READY:
            reason = EndReason.NO_CLIENT_READY
            self.end(reason, reason.message(seconds=self.options.ready_timeout))

    async def _violation(self, problem: str) -> None:
        self.end(EndReason.POLICY_VIOLATION, problem, error=f"Closing the session: {problem}.")

    def _client_stalled(self) -> None:
        reason = EndReason.CLIENT_NOT_READING
        self.end(reason, reason.message(), notify=False)

    async def fail(self, message: str) -> None:
        """An upstream failure the session cannot recover from: a fatal RTVI error, then close."""
        await self.rtvi.push_transport_message(
            RTVI.Error(data=RTVI.ErrorData(error=message, fatal=True))
        )
        self.end(EndReason.UPSTREAM_ERROR, message)

    async def drain(self, deadline: float) -> None:
        """Server shutdown: tell the client, let the current turn finish, then close 1001.

        A conversation other replicas can resume moves instead: ``session-moving`` and 1012,
        once the answer under way is done and its newest handle stored."""
        moving = self.link is not None and self.link.registry.shared and self.link.registered
        reason = EndReason.SESSION_MOVING if moving else EndReason.SERVER_SHUTDOWN
        with logger.contextualize(session_id=self.record.id):
            await self._notify(reason, reason.message())
            loop = asyncio.get_running_loop()
            while self.observer.busy() and loop.time() < deadline:
                await asyncio.sleep(DRAIN_POLL_SECS)
            words = "session moving" if moving else "server shutting down"
            self.end(reason, words, notify=False)

    def end(
        self, reason: EndReason, message: str, *, notify: bool = True, error: str | None = None
    ) -> None:
        """Close for ``reason``, once. First the client gets ``error`` (an RTVI error), if
        given, and unless ``notify`` is false a ``session-ending`` message saying why."""
        if not self.accepting():
            return
        self.record.state = SessionState.ENDING
        self.record.end_reason = reason
        self._ending = asyncio.create_task(self._end(reason, message, notify, error))

    async def _end(self, reason: EndReason, message: str, notify: bool, error: str | None) -> None:
        logger.info(f"ending session: {reason.label}")
        self.socket.set_close(reason.close_code, reason.close_reason(message))
        if error:
            await self.rtvi.send_error(error)
        if notify:
            await self._notify(reason, message)
        try:
            await asyncio.wait_for(self.worker.end(reason=reason.label), END_GRACE_SECS)
        except TimeoutError:
            await self.worker.cancel(reason=reason.label)

    async def _notify(self, reason: EndReason, message: str) -> None:
        kind = "session-moving" if reason is EndReason.SESSION_MOVING else "session-ending"
        await self.rtvi.send_server_message(
            {"type": kind, "reason": reason.label, "message": message}
        )

    def _report(self) -> None:
        """One summary line per session, and the counters for /metrics."""
        observer, serializer, metrics = self.observer, self.serializer, self.metrics
        reconnects = self.upstream.reconnects if self.upstream else 0
        unsent = self.upstream.quiet_unsent_secs if self.upstream else 0.0
        logger.info(
            f"session summary: reason={self.record.end_reason.label} "
            f"duration={self.record.duration:.1f}s turns={observer.turns} "
            f"{observer.latency_summary()} reconnects={reconnects} tokens={observer.tokens} "
            f"bad_inputs={serializer.bad_inputs} quiet_not_sent={unsent:.1f}s"
        )
        metrics.ended.labels(self.record.end_reason.label).inc()
        if self.history is not None:
            self.history.ended(self.record.end_reason.label, self.record.duration)
        metrics.audio_frames.labels("in").inc(serializer.audio_in)
        metrics.audio_frames.labels("out").inc(serializer.audio_out)
        metrics.tokens.inc(observer.tokens)
        metrics.quiet_not_sent.inc(unsent)
        if serializer.bad_inputs:
            metrics.errors.labels("bad-input").inc(serializer.bad_inputs)
        for kind, count in observer.errors.items():
            metrics.errors.labels(kind).inc(count)
