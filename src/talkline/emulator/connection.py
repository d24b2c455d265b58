"""One client connection: the setup handshake, then user turns and replies."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from loguru import logger
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from . import wire
from .audio import Activity, EnergyDetector
from .faults import Fault, FaultKind
from .records import ConnectionRecord, TurnRecord
from .replies import Reply
from .state import Conversation, Shared


class LiveConnection:
    """Serves one WebSocket connection until the client or a fault ends it."""

    def __init__(
        self, ws: ServerConnection, shared: Shared, record: ConnectionRecord, api_key: str | None
    ) -> None:
        self.ws = ws
        self.shared = shared
        self.config = shared.config
        self.record = record
        self._api_key = api_key
        self.conversation: Conversation | None = None
        self.setup: dict[str, Any] = {}
        self.stalled = False
        self.detector = EnergyDetector()
        self._manual_activity = False
        self._turn_audio = 0
        self._reply: Reply | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Handle the connection to its end, then stop every task it started."""
        try:
            if await self._handshake():
                await self._serve()
        except ConnectionClosed:
            pass
        finally:
            await self._stop_tasks()
            self._note_closed()
            await self.shared.recorder.changed()

    # -- sending ------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        """Send one server message in a binary frame, unless stalled."""
        await self.send_frame(wire.frame(message))

    async def send_frame(self, data: bytes) -> None:
        """Send a message already serialized by ``wire.frame``, unless stalled."""
        if not self.stalled:
            await self.ws.send(data)

    async def close(self, code: int, reason: str) -> None:
        """Close with `code`; the reason is cut to what a close frame carries."""
        reason = wire.cut_reason(reason)
        if self.record.close_code is None:
            self.record.close_code, self.record.close_reason = code, reason
        logger.info("connection {}: closing {} {}", self.record.index, code, reason)
        await self.ws.close(code, reason)

    def drop(self) -> None:
        """Abort the TCP connection without a close frame."""
        logger.info("connection {}: dropping TCP", self.record.index)
        self.ws.transport.abort()

    def spawn(self, coro: Any) -> asyncio.Task[None]:
        """Run `coro` as a task that is cancelled when the connection ends."""
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- setup --------------------------------------------------------------

    async def _handshake(self) -> bool:
        message = await self._receive()
        if message is None:
            return False
        setup = message.get("setup")
        if not isinstance(setup, dict) or len(message) != 1:
            await self.close(wire.CLOSE_INVALID_ARGUMENT, wire.REASON_INVALID_ARGUMENT)
            return False
        refusal = self._refusal(setup)
        if refusal is not None:
            await self.close(*refusal)
            return False
        self._accept(setup)
        await self.send({"setupComplete": {}})
        await self._send_handle()
        self._start_timers()
        await self.shared.recorder.changed()
        return True

    def _refusal(self, setup: dict[str, Any]) -> tuple[int, str] | None:
        valid_keys = self.config.valid_keys
        model = setup.get("model")
        handle = (setup.get("session_resumption") or {}).get("handle")
        if self._api_key is None:
            return wire.CLOSE_POLICY_VIOLATION, wire.REASON_NO_KEY
        if valid_keys is not None and self._api_key not in valid_keys:
            return wire.CLOSE_INVALID_ARGUMENT, wire.REASON_BAD_KEY
        if not isinstance(model, str) or not model.startswith("models/"):
            return wire.CLOSE_INVALID_ARGUMENT, wire.REASON_INVALID_ARGUMENT
        models = self.config.models
        if models is not None and model.removeprefix("models/") not in models:
            return wire.CLOSE_POLICY_VIOLATION, wire.model_not_found(model, self.record.api_version)
        if handle:
            self.record.presented_handle = handle
            self.record.handle_refusal = self.shared.handle_refusal(handle)
            if self.record.handle_refusal is not None:
                logger.info("connection {}: {}", self.record.index, self.record.handle_refusal)
                return wire.CLOSE_POLICY_VIOLATION, wire.REASON_SESSION_NOT_FOUND
        return None

    def _accept(self, setup: dict[str, Any]) -> None:
        self.setup = setup
        handle = (setup.get("session_resumption") or {}).get("handle")
        if handle:
            self.conversation = self.shared.handles[handle]
            self.record.resumed_handle = handle
        else:
            self.conversation = self.shared.new_conversation()
        self.record.setup, self.record.model = setup, setup["model"]
        self.record.conversation = self.conversation.id
        self.conversation.serving = self
        vad = (setup.get("realtime_input_config") or {}).get("automatic_activity_detection") or {}
        self._manual_activity = bool(vad.get("disabled"))
        silence_ms = vad.get("silence_duration_ms") or self.config.silence_ms
        self.detector = EnergyDetector(
            threshold=self.config.vad_threshold,
            start_ms=self.config.speech_start_ms,
            silence_ms=float(silence_ms),
        )

    def text_mode(self) -> bool:
        """Whether setup asked for TEXT replies instead of audio."""
        config = self.setup.get("generation_config") or {}
        return "TEXT" in (config.get("response_modalities") or [])

    def wants(self, field: str) -> bool:
        """Whether setup switched on an optional feature such as `output_audio_transcription`."""
        return field in self.setup and self.setup[field] is not None

    async def _send_handle(self) -> None:
        if self.wants("session_resumption") and self.conversation is not None:
            handle = self.shared.issue_handle(self.conversation)
            self.record.handles.append(handle)
            await self.send(wire.resumption_update(handle))

    # -- receiving ----------------------------------------------------------

    async def _receive(self) -> dict[str, Any] | None:
        message = self._parse(await self.ws.recv())
        if message is None:
            await self.close(wire.CLOSE_INVALID_ARGUMENT, wire.REASON_INVALID_ARGUMENT)
        return message

    async def _serve(self) -> None:
        async for raw in self.ws:
            message = self._parse(raw)
            if message is None:
                await self.close(wire.CLOSE_INVALID_ARGUMENT, wire.REASON_INVALID_ARGUMENT)
                return
            if not self.stalled:
                await self._dispatch(message)
            await self.shared.recorder.changed()

    def _parse(self, raw: str | bytes) -> dict[str, Any] | None:
        try:
            message = json.loads(raw)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            return None
        if self.config.record_messages:
            self.record.messages.append(message)
        return wire.normalize(message)

    async def _dispatch(self, message: dict[str, Any]) -> None:
        if "realtime_input" in message:
            await self._on_realtime(message["realtime_input"] or {})
        elif "client_content" in message:
            if (message["client_content"] or {}).get("turn_complete"):
                await self.end_turn("client_content")
        elif "tool_response" not in message:
            await self.close(wire.CLOSE_INVALID_ARGUMENT, wire.REASON_INVALID_ARGUMENT)

    async def _on_realtime(self, realtime: dict[str, Any]) -> None:
        blobs = [realtime["audio"]] if realtime.get("audio") else []
        blobs += realtime.get("media_chunks") or []
        for blob in blobs:
            mime = blob.get("mime_type") or ""
            if mime.startswith("audio/"):
                await self._on_audio(wire.decode_b64(blob.get("data") or ""), mime)
        if realtime.get("text"):
            await self.end_turn("text")
        if realtime.get("activity_start") is not None and self._manual_activity:
            await self.interrupt()
        if realtime.get("activity_end") is not None and self._manual_activity:
            await self.end_turn("activity")
        if realtime.get("audio_stream_end") and self.detector.speaking:
            self.detector.reset()
            await self.end_turn("audio")

    async def _on_audio(self, pcm: bytes, mime: str) -> None:
        self.record.audio_bytes += len(pcm)
        self._turn_audio += len(pcm)
        if self._manual_activity:
            return
        self.detector.rate = wire.sample_rate(mime)
        for event in self.detector.feed(pcm):
            if event is Activity.SPEECH_STARTED:
                await self.interrupt()
            else:
                await self.end_turn("audio")

    # -- turns --------------------------------------------------------------

    async def end_turn(self, source: str) -> None:
        """The user finished a turn: stop any reply still running and start the next."""
        await self.interrupt()
        assert self.conversation is not None
        self.conversation.turns += 1
        turn = TurnRecord(
            self.conversation.turns, source, self._turn_audio, ended_at=time.monotonic()
        )
        self._turn_audio = 0
        self.record.turns.append(turn)
        self._reply = Reply(self, turn)
        self._reply.task = self.spawn(self._reply.run())

    async def interrupt(self) -> None:
        """Cut a reply that is still being sent and tell the client."""
        reply, self._reply = self._reply, None
        if reply is None or reply.task is None or reply.task.done():
            return
        reply.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reply.task
        reply.turn.interrupted = True
        await self.send(wire.server_content(interrupted=True))

    async def turn_done(self, turn: TurnRecord) -> None:
        """After turnComplete: a fresh handle, then any fault due after this turn."""
        await self._send_handle()
        await self.shared.recorder.changed()
        for fault in self.shared.faults:
            if fault.matches_turn(self.record.index, turn.number):
                await self.fire(fault)

    # -- faults -------------------------------------------------------------

    async def fire(self, fault: Fault) -> bool:
        """Carry out `fault`; True when the reply in progress must stop."""
        fault.fired = True
        logger.info("connection {}: fault {}", self.record.index, fault.kind.value)
        if fault.kind is FaultKind.GO_AWAY:
            await self.send(wire.go_away(fault.time_left))
            self.record.sent_go_away = True
            self.spawn(self._close_later(fault.time_left))
            await self.shared.recorder.changed()
            return False
        if fault.kind is FaultKind.CLOSE:
            self.spawn(self.close(fault.code, fault.reason))
        elif fault.kind is FaultKind.DROP:
            self.drop()
        else:
            self.stalled = True
        await self.shared.recorder.changed()
        return True

    def _start_timers(self) -> None:
        for fault in self.shared.faults:
            if fault.matches_timer(self.record.index):
                self.spawn(self._fire_later(fault))

    async def _fire_later(self, fault: Fault) -> None:
        await asyncio.sleep(fault.after_seconds or 0.0)
        if not fault.fired and await self.fire(fault):
            self._drop_reply()

    def _drop_reply(self) -> None:
        reply, self._reply = self._reply, None
        if reply is not None and reply.task is not None:
            reply.task.cancel()

    async def _close_later(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.close(wire.CLOSE_INTERNAL_ERROR, wire.REASON_DEADLINE)

    # -- ending -------------------------------------------------------------

    async def _stop_tasks(self) -> None:
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _note_closed(self) -> None:
        self.record.closed_at = time.monotonic()
        if self.conversation is not None and self.conversation.serving is self:
            self.conversation.serving = None
        if self.record.close_code is None:
            self.record.close_code = self.ws.close_code
            self.record.close_reason = self.ws.close_reason
