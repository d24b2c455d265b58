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
from talkline.config import Settings
from talkline.pipelines.build import build_pipeline
from talkline.resources import SharedResources
from talkline.sessions import SessionRecord
from talkline.transport import GuardedSerializer, SessionSocket

END_GRACE_SECS = 5.0


class TalklineRTVIProcessor(RTVIProcessor):
    """RTVI with talkline's own ``about`` in ``bot-ready``."""

    def __init__(self, about: Mapping[str, Any]):
        super().__init__()
        self._about = dict(about)

    async def set_bot_ready(self, about: Mapping[str, Any] | None = None) -> None:
        await super().set_bot_ready(about or self._about)


def describe_brain(settings: Settings) -> dict[str, str]:
    if settings.effective_brain == "gemini":
        return {"brain": "gemini", "model": settings.gemini_model, "voice": settings.gemini_voice}
    responder = settings.effective_responder
    about = {"brain": "local", "responder": responder, "stt": "whisper", "tts": "piper"}
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
    ):
        self.record = record
        self.settings = settings
        self.socket = SessionSocket(websocket)
        self.about = {"library": "talkline", "library_version": __version__}
        self.about |= describe_brain(settings) | {"session_id": record.id}
        self.rtvi = TalklineRTVIProcessor(self.about)
        self.serializer = GuardedSerializer(
            sample_rate=settings.audio_in_rate,
            max_message_bytes=settings.max_message_bytes,
            report=self.rtvi.send_error,
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
        self.worker = PipelineWorker(
            build_pipeline(settings, self.transport, shared, on_fatal=self.fail),
            params=PipelineParams(
                audio_in_sample_rate=settings.audio_in_rate,
                audio_out_sample_rate=settings.audio_out_rate,
                enable_metrics=True,
            ),
            rtvi_processor=self.rtvi,
            idle_timeout_secs=settings.idle_timeout,
            cancel_on_idle_timeout=False,
            conversation_id=record.id,
        )
        self._ending: asyncio.Task[None] | None = None
        self._register_handlers()

    def _register_handlers(self) -> None:
        @self.transport.event_handler("on_client_disconnected")
        async def on_client_disconnected(_transport: Any, _websocket: Any) -> None:
            await self.worker.cancel(reason="client disconnected")

        if self.settings.effective_brain == "gemini":

            @self.rtvi.event_handler("on_client_ready")
            async def on_client_ready(_rtvi: Any) -> None:
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
        timer = asyncio.create_task(self._session_timer(), name=f"timer-{self.record.id}")
        runner = WorkerRunner(handle_sigint=False)
        try:
            await runner.add_workers(self.worker)
            await runner.run()
        finally:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
            if self._ending:
                self._ending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._ending
            await self.socket.close()
            logger.info(
                f"session ended: {self.record.end_reason} after {self.record.duration:.1f} s, "
                f"{self.serializer.bad_inputs} bad inputs"
            )

    async def _session_timer(self) -> None:
        await asyncio.sleep(self.settings.session_timeout)
        minutes = self.settings.session_timeout / 60
        self.end("session-timeout", f"The session reached its {minutes:g} minute limit.")

    async def fail(self, message: str) -> None:
        """An upstream failure the session cannot recover from: a fatal RTVI error, then close."""
        await self.rtvi.push_transport_message(
            RTVI.Error(data=RTVI.ErrorData(error=message, fatal=True))
        )
        self.end("upstream-error", message, code=status.WS_1011_INTERNAL_ERROR)

    def end(self, reason: str, message: str, code: int = status.WS_1000_NORMAL_CLOSURE) -> None:
        """Tell the client why, then close with ``code``; idempotent."""
        if self._ending is None:
            self._ending = asyncio.create_task(self._end(reason, message, code))

    async def _end(self, reason: str, message: str, code: int) -> None:
        logger.info(f"ending session: {reason}")
        self.record.end_reason = reason
        self.socket.set_close(code, f"{reason}: {message}")
        await self.rtvi.send_server_message(
            {"type": "session-ending", "reason": reason, "message": message}
        )
        try:
            await asyncio.wait_for(self.worker.end(reason=reason), END_GRACE_SECS)
        except TimeoutError:
            await self.worker.cancel(reason=reason)
