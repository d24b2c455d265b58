"""Gemini Live as talkline's brain: Pipecat's service, with reconnects that lose nothing.

Pipecat's ``GeminiLiveLLMService`` stores resumption handles and reconnects after a receive
error, but it ignores ``goAway``, drops user audio while it is not connected, gives up on a
failed first connect silently, and reports fatal upstream errors in the SDK's words. This
subclass:

- reconnects on ``goAway`` before the deadline (after the current answer, if there is time),
  carrying the newest resumption handle;
- keeps user audio in a bounded buffer whenever the upstream cannot take it, and sends it,
  in order, as soon as it can — so the service hears all of the user's speech;
- pauses the upstream audio while the user is quiet (services/quiet_hold.py);
- retries recoverable failures (1011, dropped connections, stale handles) with backoff and a
  bounded number of attempts;
- turns unrecoverable ones (bad key, unknown model) into one plain sentence naming the
  setting to fix, handed to ``on_fatal``.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from google.genai import Client
from google.genai.live import AsyncSession
from google.genai.types import HttpOptions, LiveServerMessage
from loguru import logger
from pipecat.frames.frames import Frame, InputAudioRawFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameCallback, FrameDirection
from pipecat.services.google.gemini_live.llm import (
    ContextWindowCompressionParams,
    GeminiLiveLLMService,
    GeminiModalities,
)
from pipecat.services.google.utils import update_google_client_http_options

from talkline.services.quiet_hold import PREROLL_SECS, QuietHold, QuietSource

BACKOFF_SECS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
GO_AWAY_MARGIN = 0.5  # of the time left: wait at most this share for the answer to finish
FLUSH_CHUNK_BYTES = 16000 * 2  # send buffered audio one second at a time
WINDOW_SECS = 512 / 16000  # the speech gate scores 32 ms windows

OnFatal = Callable[[str], Awaitable[None]]
OnHandle = Callable[[str, list[dict[str, str]]], Awaitable[None]]

# --- Pipecat internals this module relies on -----------------------------------------------
# Private names of GeminiLiveLLMService that TalklineGeminiLiveService overrides, calls or
# reads, with why. Any Pipecat release may rename them; tests/test_pipecat_contract.py checks
# each against the installed Pipecat. Using another private name means adding it here.
# (owner, name, kind, why); kind is "override", "calls" or "reads" (reads or writes).
PIPECAT_PRIVATE: tuple[tuple[type, str, str, str], ...] = (
    (GeminiLiveLLMService, "_send_user_audio", "override", "keep user audio while away"),
    (GeminiLiveLLMService, "_handle_send_error", "override", "a failed send reconnects"),
    (GeminiLiveLLMService, "_connection_task_handler", "override", "a refused connect fails"),
    (GeminiLiveLLMService, "_handle_session_ready", "override", "count reconnects, flush audio"),
    (GeminiLiveLLMService, "_handle_connection_error", "override", "backoff, fatal errors"),
    (GeminiLiveLLMService, "_reconnect", "override", "time reconnects; called on goAway"),
    (GeminiLiveLLMService, "_connect", "override", "a resumed session's first setup: handle"),
    (GeminiLiveLLMService, "_handle_server_message", "override", "see goAway"),
    (GeminiLiveLLMService, "_session", "reads", "the live SDK session to send audio on"),
    (GeminiLiveLLMService, "_ready_for_realtime_input", "reads", "whether audio can be sent"),
    (GeminiLiveLLMService, "_disconnecting", "reads", "no reconnect while shutting down"),
    (GeminiLiveLLMService, "_vad_disabled", "reads", "Pipecat's own path when set"),
    (GeminiLiveLLMService, "_audio_input_paused", "reads", "Pipecat's own path when set"),
    (GeminiLiveLLMService, "_consecutive_failures", "reads", "the retry count for backoff"),
    (GeminiLiveLLMService, "_session_resumption_handle", "reads", "dropped when Gemini forgot it"),
    (GeminiLiveLLMService, "_bot_is_responding", "reads", "goAway waits for the answer"),
    (GeminiLiveLLMService, "_client", "reads", "set to the process's shared client"),
    # google-genai: the Live session's WebSocket, to send audio messages the SDK would build
    # (tests/test_gemini_wire.py checks they are the SDK's, byte for byte).
    (AsyncSession, "_ws", "reads", "send user audio without per-chunk pydantic models"),
)


@dataclass
class UpstreamStats:
    """What the upstream connection went through, for logs, metrics and tests."""

    reconnects: int = 0
    reconnect_secs: list[float] = field(default_factory=list)
    buffered_bytes: int = 0
    max_buffered_bytes: int = 0
    dropped_bytes: int = 0
    go_aways: int = 0
    quiet: QuietHold | None = None  # the pauses while the user was quiet, if it pauses

    @property
    def quiet_unsent_secs(self) -> float:
        """Seconds of the user's quiet audio never sent (16 kHz mono)."""
        return self.quiet.unsent_bytes / (2 * 16000) if self.quiet else 0.0


@dataclass
class UpstreamResume:
    """A resumed conversation's upstream: the newest handle, and what to seed Gemini with if
    it refuses the handle. ``settled`` is set once the first connection is up; ``resumed``
    then says whether the handle was taken. ``said`` collects this connection's words from
    Gemini's own transcriptions, turn by turn, to be stored beside each new handle."""

    handle: str = ""
    transcript: list[dict[str, str]] = field(default_factory=list)
    on_handle: OnHandle | None = None
    history: LLMContext | None = None  # the pipeline's context: seeded when Gemini refuses
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    resumed: bool = False
    said: list[dict[str, str]] = field(default_factory=list)
    turn: dict[str, str] = field(default_factory=dict)  # role -> words of the turn under way
    latest: str = ""  # the newest handle Gemini gave

    def hear(self, message: LiveServerMessage) -> None:
        content = message.server_content
        if content is None:
            return
        for role, part in (
            ("user", content.input_transcription),
            ("assistant", content.output_transcription),
        ):
            if part is not None and part.text:
                self.turn[role] = self.turn.get(role, "") + part.text
        if content.turn_complete or content.interrupted:
            for role in ("user", "assistant"):
                if words := self.turn.pop(role, "").strip():
                    self.said.append({"role": role, "content": words})

    def words(self) -> list[dict[str, str]]:
        """The transcript so far: what came before this connection, then what was said."""
        return self.transcript + self.said


@dataclass(frozen=True)
class GeminiOptions:
    """What the Gemini Live service needs: the endpoint, the model and voice, the limits."""

    api_key: str = field(repr=False)
    model: str
    system_instruction: str
    voice: str = "Aoede"
    language: str = "en-US"
    speaks: bool = True  # answer in audio; False: text, for another voice to speak
    compression: bool = True  # context-window compression
    base_url: str | None = None
    ca_file: Path | None = None
    reconnect_attempts: int = 5
    buffer_secs: float = 30.0  # user audio kept while the upstream reconnects
    pause_after_quiet_secs: float = 1.0  # 0: send the quiet too
    input_rate: int = 16000


def http_options(options: GeminiOptions) -> HttpOptions:
    """Where the SDK connects and what it trusts, through documented options (no patching).

    ``compression: None`` turns off permessage-deflate on the Live WebSocket: it spent about
    a tenth of the server's time compressing PCM audio, which does not compress. The SDK
    hands these arguments to ``websockets.connect`` and drops them for its HTTP clients.
    """
    client_args: dict[str, object] = {"compression": None}
    if options.ca_file:
        context = ssl.create_default_context()
        context.load_verify_locations(cafile=str(options.ca_file))
        client_args["ssl"] = context
    return HttpOptions(base_url=options.base_url, async_client_args=client_args)


_CLIENTS: dict[tuple[str, str | None, Path | None], Client] = {}
KEPT_CLIENTS = 4  # endpoints a process talks to (one in production; tests start several)


def shared_client(options: GeminiOptions) -> Client:
    """The process's google-genai client for this key and endpoint, made on first use.

    Pipecat makes a client per service, that is per session, and each made two SSL contexts
    (the SDK's HTTP and WebSocket defaults; three with ``ca_file``), each reading the whole
    CA bundle: about 0.1 s of CPU per session on the event loop, so 40 sessions starting
    together held every session's audio back for seconds. A client here only opens Live
    connections, each on its own socket, so one serves every session.
    """
    key = (options.api_key, options.base_url, options.ca_file)
    client = _CLIENTS.get(key)
    if client is None:
        if len(_CLIENTS) >= KEPT_CLIENTS:
            del _CLIENTS[next(iter(_CLIENTS))]  # sessions still using it keep their own ref
        http = update_google_client_http_options(http_options(options))
        client = _CLIENTS[key] = Client(api_key=options.api_key, http_options=http)
    return client


def realtime_audio_message(audio: bytes, rate: int) -> str:
    """What ``AsyncSession.send_realtime_input(audio=Blob(...))`` sends for ``audio``.

    The SDK builds it through a pydantic model, a converter and a dict walk per 32 ms chunk
    (about a tenth of a streaming session's CPU); the message itself is this one line.
    """
    data = base64.urlsafe_b64encode(audio).decode("ascii")  # the SDK's alphabet
    return (
        '{"realtime_input": {"audio": {"data": "'
        + data
        + f'", "mime_type": "audio/pcm;rate={rate}"}}}}}}'
    )


# What ``AsyncSession.send_realtime_input(audio_stream_end=True)`` sends.
AUDIO_STREAM_END = '{"realtime_input": {"audioStreamEnd": true}}'


def close_reason(error: Exception) -> tuple[int | None, str]:
    """The WebSocket close code and reason behind an SDK error, when there is one."""
    code = getattr(error, "code", None)
    reason = getattr(error, "details", None) or getattr(error, "message", None) or str(error)
    return (code if isinstance(code, int) else None), str(reason)


def fatal_message(error: Exception, model: str) -> str | None:
    """A sentence for the user when ``error`` cannot be recovered from, else None."""
    code, reason = close_reason(error)
    lowered = reason.lower()
    if code == 1007 and ("api key" in lowered or "api_key" in lowered):
        return f"Gemini rejected the API key ({reason}). Check GEMINI_API_KEY."
    if code == 1008 and "session not found" not in lowered and "not found" in lowered:
        return (
            f"Gemini has no Live model '{model}' ({reason}). "
            "Set TALKLINE_GEMINI_MODEL to a Live audio model."
        )
    if code == 1008 and ("unregistered" in lowered or "permission" in lowered):
        return f"Gemini refused the credentials ({reason}). Check GEMINI_API_KEY."
    if code == 1007:
        return f"Gemini refused the request: {reason}"
    return None


class TalklineGeminiLiveService(GeminiLiveLLMService):
    """Gemini Live speech-to-speech that survives upstream trouble without losing audio."""

    def __init__(
        self,
        options: GeminiOptions,
        *,
        on_fatal: OnFatal,
        on_reconnect: Callable[[], None] = lambda: None,
        resume: UpstreamResume | None = None,
        quiet: QuietSource | None = None,
    ):
        """``quiet``: the speech gate whose scores pause the upstream while the user is
        quiet (``options.pause_after_quiet_secs``); None sends every chunk."""
        self._options = options  # create_client, called by Pipecat's __init__, reads it
        super().__init__(
            api_key=options.api_key,
            system_instruction=options.system_instruction,
            settings=GeminiLiveLLMService.Settings(
                model=options.model,
                voice=options.voice,
                language=options.language,
                context_window_compression=ContextWindowCompressionParams(
                    enabled=options.compression
                ),
                # With another voice (Piper, ElevenLabs) Gemini answers in text.
                modalities=GeminiModalities.AUDIO if options.speaks else GeminiModalities.TEXT,
            ),
            inference_on_context_initialization=False,
        )
        self._on_fatal = on_fatal
        self._on_reconnect = on_reconnect
        self._pending = bytearray()
        self._pending_rate = options.input_rate
        self._buffer_limit = int(options.buffer_secs * options.input_rate * 2)
        self.hold: QuietHold | None = None
        if quiet is not None and options.pause_after_quiet_secs > 0:
            self.hold = QuietHold(
                quiet,
                after_secs=options.pause_after_quiet_secs,
                window_secs=WINDOW_SECS,
                preroll_bytes=int(PREROLL_SECS * options.input_rate) * 2,
            )
        self._failed = False
        self._flushing = False
        self._end_owed = False  # a pause Gemini has not yet been told of (audioStreamEnd)
        self._go_away_task: asyncio.Task[None] | None = None
        self._reconnect_started: float | None = None
        self.stats = UpstreamStats(quiet=self.hold)
        self.resume = resume or UpstreamResume()
        if self.resume.handle:  # the first connection's setup carries it
            self._session_resumption_handle = self.resume.handle
        else:
            self.resume.settled.set()

    def create_client(self) -> None:
        """The process's shared client (Pipecat's hook; it would make one per session)."""
        self._client = shared_client(self._options)

    # --- user audio: never dropped while the upstream is away -----------------------------

    async def queue_frame(
        self,
        frame: Frame,
        direction: FrameDirection = FrameDirection.DOWNSTREAM,
        callback: FrameCallback | None = None,
    ) -> None:
        """User audio is sent upstream at once, by the processor that pushed it.

        It would otherwise wait in this service's input queue for its task: one more task
        switch per 32 ms chunk, and up to a loop iteration of inbound latency. Audio takes
        no part in the service's frame ordering (it is sent as it comes, or kept in order
        while the upstream is away). Every other frame is queued as usual.
        """
        if isinstance(frame, InputAudioRawFrame) and callback is None:
            await self._send_user_audio(frame)
            return
        await super().queue_frame(frame, direction, callback)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """User audio ends here: it is sent upstream and not pushed on.

        Nothing after the brain reads the user's audio, and pushing each 32 ms chunk on
        cost three more processors' queues and tasks (output transport, assistant
        aggregator, the worker's sink) per chunk. Every other frame takes Pipecat's path.
        """
        if isinstance(frame, InputAudioRawFrame):
            await self._send_user_audio(frame)
            return
        await super().process_frame(frame, direction)

    def _can_send(self) -> bool:
        return bool(self._session and self._ready_for_realtime_input and not self._disconnecting)

    async def _send_user_audio(self, frame) -> None:
        if self._vad_disabled or self._audio_input_paused or self._failed:
            await super()._send_user_audio(frame)
            return
        self._pending_rate = frame.sample_rate
        audio = frame.audio
        if self.hold is not None:
            audio, pausing = self.hold.admit(audio)
            self._end_owed = (self._end_owed or pausing) and not audio
            waiting = self._pending or self._flushing  # kept audio, or its last piece in flight
            if self._end_owed and self._can_send() and not waiting:
                # after any kept audio: owed until the upstream has taken all of it
                self._end_owed = False
                if not await self._send(AUDIO_STREAM_END):
                    self._end_owed = self.hold.holding
            if not audio:
                return
        if self._pending or self._flushing or not self._can_send():
            self._keep(audio)
            if self._can_send():
                await self._flush_pending()
            return
        await self._send_audio(audio)

    def _keep(self, audio: bytes) -> None:
        self._pending.extend(audio)
        self.stats.buffered_bytes += len(audio)
        overflow = len(self._pending) - self._buffer_limit
        if overflow > 0:  # bounded: the oldest audio goes first
            del self._pending[:overflow]
            self.stats.dropped_bytes += overflow
        self.stats.max_buffered_bytes = max(self.stats.max_buffered_bytes, len(self._pending))

    async def _flush_pending(self) -> None:
        """Send the kept audio in order. One flush at a time: a chunk that arrives while a
        send waits joins the buffer behind it, and nothing is sent twice."""
        if self._flushing:
            return
        self._flushing = True
        try:
            while self._pending and self._can_send():
                chunk = bytes(self._pending[:FLUSH_CHUNK_BYTES])
                del self._pending[: len(chunk)]
                sent = False
                try:
                    sent = await self._send_audio(chunk, keep_on_failure=False)
                finally:  # failed or cancelled: first in line again for the next connection
                    if not sent:
                        self._pending[:0] = chunk
                if not sent:
                    return
        finally:
            self._flushing = False

    async def _send_audio(self, audio: bytes, *, keep_on_failure: bool = True) -> bool:
        sent = await self._send(realtime_audio_message(audio, self._pending_rate))
        if not sent and keep_on_failure:
            self._keep(audio)
        return sent

    async def _send(self, message: str) -> bool:
        """Write one message on the Live session's socket; a failure reconnects."""
        assert self._session is not None
        try:
            await self._session._ws.send(message)
            return True
        except Exception as error:
            logger.warning(f"Gemini send failed ({error}); reconnecting")
            self.create_task(self._reconnect(), name="gemini-reconnect-after-send")
            return False

    async def _handle_send_error(self, error: Exception) -> None:
        """A failed send is a reason to reconnect, not to end the conversation."""
        if self._disconnecting or not self._session:
            return
        logger.warning(f"Gemini send failed ({error}); reconnecting")
        self.create_task(self._reconnect(), name="gemini-reconnect-after-send")

    # --- connection lifecycle ---------------------------------------------------------------

    async def _connection_task_handler(self, config) -> None:
        """Also treat a refused connect (bad key, unknown model, network) as a failure."""
        try:
            await super()._connection_task_handler(config)
        except Exception as error:
            if self._disconnecting:
                return
            if await self._handle_connection_error(error):
                await self._reconnect()

    async def _handle_session_ready(self, session) -> None:
        await super()._handle_session_ready(session)
        if not self.resume.settled.is_set():
            self.resume.resumed = bool(self._session_resumption_handle)
            self.resume.settled.set()
        if self._reconnect_started is not None:
            took = time.monotonic() - self._reconnect_started
            self.stats.reconnects += 1
            self.stats.reconnect_secs.append(took)
            self._on_reconnect()
            self._reconnect_started = None
            resumed = "resumed with handle" if self._session_resumption_handle else "new session"
            logger.info(
                f"Gemini reconnected in {took * 1000:.0f} ms ({resumed}); "
                f"{len(self._pending)} bytes of user audio kept meanwhile, sending them now"
            )
        if self._pending:
            await self._flush_pending()

    async def _handle_connection_error(self, error: Exception) -> bool:
        message = fatal_message(error, self._options.model)
        code, reason = close_reason(error)
        attempts = self._consecutive_failures  # Pipecat resets it after 10 s of stable connection
        if message is None and attempts >= self._options.reconnect_attempts:
            message = (
                f"Lost the connection to Gemini and could not restore it after "
                f"{attempts} attempts ({code} {reason}). Please try again in a moment."
            )
        if message is not None:
            await self._fail(message)
            return False
        if code == 1008 and "session not found" in reason.lower():
            logger.warning("Gemini forgot the resumption handle; starting a fresh session")
            self._session_resumption_handle = None
            self._seed_if_resuming()
        delay = BACKOFF_SECS[min(attempts, len(BACKOFF_SECS) - 1)]
        self._consecutive_failures += 1
        logger.warning(
            f"Gemini connection failed ({code} {reason}); retry {attempts + 1} in {delay}s"
        )
        await asyncio.sleep(delay)
        return True

    def _seed_if_resuming(self) -> None:
        """A resume whose handle Gemini refused: the fresh session hears the words so far."""
        resume = self.resume
        if resume.settled.is_set() or resume.history is None or not resume.transcript:
            return
        logger.info(f"seeding the fresh Gemini session with {len(resume.transcript)} messages")
        resume.history.set_messages([dict(m) for m in resume.transcript])  # type: ignore[misc]

    async def _fail(self, message: str) -> None:
        self.resume.settled.set()
        if self._failed:
            return
        self._failed = True
        logger.error(f"Gemini: {message}")
        await self._on_fatal(message)

    async def _connect(self, session_resumption_handle: str | None = None) -> None:
        """Pipecat's first connect carries no handle; a resumed conversation's does."""
        await super()._connect(session_resumption_handle or self._session_resumption_handle)

    async def _reconnect(self) -> None:
        if self._reconnect_started is None:
            self._reconnect_started = time.monotonic()
        await super()._reconnect()

    # --- goAway: leave before the deadline --------------------------------------------------

    async def _handle_server_message(self, message: LiveServerMessage) -> None:
        if message.go_away is not None and self._go_away_task is None:
            time_left = parse_seconds(message.go_away.time_left)
            self.stats.go_aways += 1
            logger.info(f"Gemini goAway: {time_left:.1f} s left; reconnecting before then")
            self._go_away_task = self.create_task(self._leave_before(time_left), name="go-away")
        self.resume.hear(message)
        await super()._handle_server_message(message)
        update = message.session_resumption_update
        if update is not None and update.resumable and update.new_handle:
            self.resume.latest = update.new_handle
            if self.resume.on_handle:
                await self.resume.on_handle(update.new_handle, self.resume.words())
        content = message.server_content
        if content is not None and content.model_turn is not None:
            # Let the audio this message pushed move on before the next message is read.
            # The SDK's receive returns at once while messages are waiting, so without a
            # yield a burst (a reply arriving faster than real time) was parsed and pushed
            # whole before the output transport's tasks ran: its first chunk left after the
            # last message was handled. Other messages (transcripts, turnComplete) are
            # read on at once, as before: yielding after them only let their follow-up
            # work (RTVI events) go ahead of the audio behind them.
            await asyncio.sleep(0)

    async def cleanup(self) -> None:
        if self._go_away_task is not None:
            await self.cancel_task(self._go_away_task)
            self._go_away_task = None
        await super().cleanup()

    async def _leave_before(self, time_left: float) -> None:
        """Let the current answer finish if there is time, then resume on a new connection."""
        deadline = time.monotonic() + time_left * GO_AWAY_MARGIN
        while self._bot_is_responding and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await self._reconnect()
        self._go_away_task = None


def parse_seconds(duration: str | None) -> float:
    """A protobuf Duration string such as ``"50s"`` or ``"0.200s"`` in seconds."""
    try:
        return float((duration or "0s").rstrip("s"))
    except ValueError:
        return 0.0
