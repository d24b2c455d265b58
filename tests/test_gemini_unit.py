"""The Gemini service's own logic, in-process: the audio buffer, fatal errors, retries.

No connection is made: the upstream session is a stand-in that records what it is sent.
test_gemini.py covers the same paths end to end against the emulator.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from pipecat.frames.frames import InputAudioRawFrame
from pipecat.services.google.gemini_live.llm import GeminiModalities

import talkline.services.gemini as gemini
from talkline.config import Settings
from talkline.pipelines.build import gemini_options
from talkline.services.gemini import (
    BACKOFF_SECS,
    FLUSH_CHUNK_BYTES,
    GeminiOptions,
    TalklineGeminiLiveService,
    close_reason,
    fatal_message,
    http_options,
    parse_seconds,
)

MODEL = "gemini-live-test"


class Upstream:
    """A stand-in Live session whose socket (``_ws``, where the service writes audio
    messages) keeps each audio blob sent, or fails when told to."""

    def __init__(self, *, fails: bool = False, slow: bool = False, fails_after: int = -1):
        self.sent: list[tuple[bytes, str]] = []
        self.messages: list[str] = []  # "audio" or "audioStreamEnd", in order
        self.fails = fails
        self.fails_after = fails_after  # messages taken before it fails (-1: never)
        self.slow = slow  # each send waits a loop iteration, as one under back-pressure
        self._ws = self

    async def send(self, message: str) -> None:
        if self.slow:
            await asyncio.sleep(0)
        if self.fails or len(self.messages) == self.fails_after:
            raise ConnectionError("upstream gone")
        realtime = json.loads(message)["realtime_input"]
        self.messages += list(realtime)
        if "audio" in realtime:
            blob = realtime["audio"]
            self.sent.append((base64.urlsafe_b64decode(blob["data"]), blob["mime_type"]))


class Closed(Exception):
    """An SDK error carrying a WebSocket close code and reason, as google-genai raises."""

    def __init__(self, code: int, details: str):
        super().__init__(f"{code} None. {details}")
        self.code, self.details = code, details


def service_options(**overrides: Any) -> GeminiOptions:
    """The service's options as the app builds them from settings with ``overrides``."""
    values = {"gemini_api_key": "k", "gemini_model": MODEL} | overrides
    return gemini_options(Settings(_env_file=None, **values))  # type: ignore[call-arg]


@pytest.fixture
def fatal() -> list[str]:
    return []


@pytest.fixture
def service(fatal: list[str]) -> TalklineGeminiLiveService:
    async def on_fatal(message: str) -> None:
        fatal.append(message)

    return TalklineGeminiLiveService(service_options(gemini_buffer_secs=1.0), on_fatal=on_fatal)


def connect(service: TalklineGeminiLiveService, upstream: Upstream | None) -> None:
    service._session = upstream  # type: ignore[assignment]
    service._ready_for_realtime_input = upstream is not None


def audio(size: int, fill: int = 1) -> InputAudioRawFrame:
    return InputAudioRawFrame(audio=bytes([fill]) * size, sample_rate=16000, num_channels=1)


async def test_audio_goes_straight_up_while_connected(service: TalklineGeminiLiveService) -> None:
    upstream = Upstream()
    connect(service, upstream)
    await service._send_user_audio(audio(640))
    assert upstream.sent == [(bytes([1]) * 640, "audio/pcm;rate=16000")]
    assert service.stats.buffered_bytes == 0


async def test_audio_is_kept_while_away_and_sent_in_order_on_return(
    service: TalklineGeminiLiveService,
) -> None:
    connect(service, None)
    for fill in (1, 2, 3):
        await service._send_user_audio(audio(20000, fill))
    assert service.stats.buffered_bytes == 60000 and service.stats.max_buffered_bytes == 32000
    assert service.stats.dropped_bytes == 28000  # 1 s of 16 kHz audio kept: the newest
    upstream = Upstream()
    connect(service, upstream)
    await service._send_user_audio(audio(100, 4))  # kept behind the rest, then all sent
    sent = b"".join(data for data, _ in upstream.sent)
    assert sent == bytes([2]) * 11900 + bytes([3]) * 20000 + bytes([4]) * 100
    assert service.stats.dropped_bytes == 28100
    assert not service._pending


async def test_kept_audio_is_sent_a_second_at_a_time(fatal: list[str]) -> None:
    async def on_fatal(message: str) -> None:
        fatal.append(message)

    service = TalklineGeminiLiveService(service_options(gemini_buffer_secs=5.0), on_fatal=on_fatal)
    connect(service, None)
    await service._send_user_audio(audio(FLUSH_CHUNK_BYTES + 8000))
    upstream = Upstream()
    connect(service, upstream)
    await service._flush_pending()
    assert [len(data) for data, _ in upstream.sent] == [FLUSH_CHUNK_BYTES, 8000]
    assert service.stats.dropped_bytes == 0


async def test_audio_waits_until_the_session_is_ready_for_it(
    service: TalklineGeminiLiveService,
) -> None:
    upstream = Upstream()
    service._session = upstream  # type: ignore[assignment]
    service._ready_for_realtime_input = False  # connected, setup not yet complete
    await service._send_user_audio(audio(640))
    assert upstream.sent == [] and len(service._pending) == 640


@pytest.mark.parametrize("state", ["_audio_input_paused", "_failed"])
async def test_paused_or_failed_audio_is_left_to_pipecat(
    service: TalklineGeminiLiveService, monkeypatch: pytest.MonkeyPatch, state: str
) -> None:
    handed: list[InputAudioRawFrame] = []

    async def pipecats(_self: Any, frame: InputAudioRawFrame) -> None:
        handed.append(frame)

    monkeypatch.setattr(gemini.GeminiLiveLLMService, "_send_user_audio", pipecats)
    setattr(service, state, True)
    frame = audio(640)
    await service._send_user_audio(frame)
    assert handed == [frame] and not service._pending


def test_the_buffer_drops_even_one_byte_over_its_limit(
    service: TalklineGeminiLiveService,
) -> None:
    service._keep(bytes(32000) + b"\x01")
    assert service.stats.dropped_bytes == 1 and bytes(service._pending[-1:]) == b"\x01"


async def test_a_failed_send_keeps_the_audio_and_reconnects(
    service: TalklineGeminiLiveService, monkeypatch: pytest.MonkeyPatch, logged: list[str]
) -> None:
    reconnects: list[str] = []

    def create_task(coro: Coroutine[Any, Any, None], name: str) -> None:
        reconnects.append(name)
        coro.close()

    monkeypatch.setattr(service, "create_task", create_task)
    connect(service, Upstream(fails=True))
    await service._send_user_audio(audio(640))
    assert bytes(service._pending) == bytes([1]) * 640
    assert reconnects == ["gemini-reconnect-after-send"]
    assert logged == ["Gemini send failed (upstream gone); reconnecting"]


async def test_a_failed_flush_keeps_the_rest_for_later(
    service: TalklineGeminiLiveService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "create_task", lambda coro, name: coro.close())
    connect(service, None)
    await service._send_user_audio(audio(640))
    connect(service, Upstream(fails=True))
    await service._flush_pending()
    assert bytes(service._pending) == bytes([1]) * 640  # not doubled, not lost


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (Closed(1007, "API key not valid"), "Gemini rejected the API key (API key not valid). "
         "Check GEMINI_API_KEY."),
        (Closed(1007, "bad api_key"), "Gemini rejected the API key (bad api_key). "
         "Check GEMINI_API_KEY."),
        (Closed(1008, "models/x is not found"), f"Gemini has no Live model '{MODEL}' "
         "(models/x is not found). Set TALKLINE_GEMINI_MODEL to a Live audio model."),
        (Closed(1008, "Unregistered caller"), "Gemini refused the credentials "
         "(Unregistered caller). Check GEMINI_API_KEY."),
        (Closed(1008, "Permission denied"), "Gemini refused the credentials "
         "(Permission denied). Check GEMINI_API_KEY."),
        (Closed(1007, "Invalid argument"), "Gemini refused the request: Invalid argument"),
        (Closed(1008, "Session not found"), None),
        (Closed(1011, "Internal error"), None),
        (ConnectionError("reset"), None),
    ],
)  # fmt: skip
def test_fatal_errors_name_what_to_fix(error: Exception, expected: str | None) -> None:
    assert fatal_message(error, MODEL) == expected


def test_the_service_is_set_up_from_the_settings(service: TalklineGeminiLiveService) -> None:
    chosen: Any = service._settings
    assert (chosen.model, chosen.voice, chosen.language) == (MODEL, "Aoede", "en-US")
    assert chosen.modalities == GeminiModalities.AUDIO
    assert chosen.context_window_compression.enabled is True
    assert service._system_instruction_from_init == service_options().system_instruction
    assert service._inference_on_context_initialization is False
    assert service._api_key == "k" and service._pending_rate == 16000
    assert service._failed is False and service._go_away_task is None
    assert service._client is gemini.shared_client(service_options())  # the process's one


def test_with_another_voice_gemini_answers_in_text(fatal: list[str]) -> None:
    async def on_fatal(message: str) -> None:
        fatal.append(message)

    quiet = service_options(tts="piper", gemini_compression=False, gemini_language="fr-FR")
    service = TalklineGeminiLiveService(quiet, on_fatal=on_fatal)
    chosen: Any = service._settings
    assert chosen.modalities == GeminiModalities.TEXT
    assert chosen.language == "fr-FR"
    assert chosen.context_window_compression.enabled is False


def test_the_sdk_connects_where_the_settings_say_without_compression() -> None:
    ca_file = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")
    options = http_options(
        service_options(gemini_base_url="https://127.0.0.1:8443", gemini_ca_file=ca_file)
    )
    assert options.base_url == "https://127.0.0.1:8443"
    args = options.async_client_args or {}
    assert set(args) == {"compression", "ssl"} and args["compression"] is None
    assert isinstance(args["ssl"], ssl.SSLContext) and args["ssl"].cert_store_stats()["x509_ca"]
    assert http_options(service_options()).async_client_args == {"compression": None}


def test_sessions_share_one_sdk_client_and_make_no_ssl_context_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each SSL context reads the whole CA bundle (~50 ms on the event loop): one per
    process and endpoint, not two or three per session."""
    ca_file = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")
    options = service_options(gemini_base_url="https://127.0.0.1:8443", gemini_ca_file=ca_file)

    async def on_fatal(_message: str) -> None: ...

    first = TalklineGeminiLiveService(options, on_fatal=on_fatal)
    made: list[object] = []
    original = ssl.create_default_context

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        made.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counted)
    later = [TalklineGeminiLiveService(options, on_fatal=on_fatal) for _ in range(5)]
    assert all(service._client is first._client for service in later)
    assert made == []
    elsewhere = service_options(gemini_base_url="https://127.0.0.1:9443", gemini_ca_file=ca_file)
    assert TalklineGeminiLiveService(elsewhere, on_fatal=on_fatal)._client is not first._client


def test_close_reason_reads_the_sdk_error() -> None:
    assert close_reason(Closed(1011, "boom")) == (1011, "boom")
    assert close_reason(ConnectionError("reset")) == (None, "reset")
    error = ConnectionError("x")
    error.code, error.message = "1011", "from message"  # type: ignore[attr-defined]
    assert close_reason(error) == (None, "from message")


@pytest.mark.parametrize(
    ("text", "seconds"), [("50s", 50.0), ("0.200s", 0.2), (None, 0.0), ("soon", 0.0)]
)
def test_go_away_durations_are_read_in_seconds(text: str | None, seconds: float) -> None:
    assert parse_seconds(text) == seconds


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The backoff's sleeps, recorded instead of waited, on this test's thread only:
    asyncio.sleep is one function for the whole process, and test servers' threads keep it."""
    record: list[float] = []
    real_sleep, here = asyncio.sleep, threading.current_thread()

    async def sleep(seconds: float) -> None:
        if threading.current_thread() is not here:
            await real_sleep(seconds)
            return
        record.append(seconds)

    monkeypatch.setattr(gemini.asyncio, "sleep", sleep)
    return record


async def test_recoverable_errors_are_retried_with_backoff(
    service: TalklineGeminiLiveService,
    fatal: list[str],
    slept: list[float],
    logged: list[str],
) -> None:
    results = [await service._handle_connection_error(Closed(1011, "x")) for _ in range(5)]
    assert results == [True] * 5 and slept == list(BACKOFF_SECS[:5]) and fatal == []
    assert logged[0] == "Gemini connection failed (1011 x); retry 1 in 0.1s"
    assert await service._handle_connection_error(Closed(1011, "x")) is False
    assert fatal == [
        "Lost the connection to Gemini and could not restore it after 5 attempts "
        "(1011 x). Please try again in a moment."
    ]
    assert await service._handle_connection_error(Closed(1011, "x")) is False
    assert len(fatal) == 1  # told once
    assert logged[-1] == f"Gemini: {fatal[0]}"


async def test_backoff_stops_growing_at_its_longest(fatal: list[str], slept: list[float]) -> None:
    async def on_fatal(message: str) -> None:
        fatal.append(message)

    patient = TalklineGeminiLiveService(
        service_options(gemini_reconnect_attempts=9), on_fatal=on_fatal
    )
    for _ in range(9):
        assert await patient._handle_connection_error(Closed(1011, "x"))
    assert slept == [*BACKOFF_SECS, BACKOFF_SECS[-1], BACKOFF_SECS[-1], BACKOFF_SECS[-1]]


async def test_a_fatal_error_is_not_retried(
    service: TalklineGeminiLiveService, fatal: list[str]
) -> None:
    assert await service._handle_connection_error(Closed(1008, "model not found")) is False
    assert fatal == [
        f"Gemini has no Live model '{MODEL}' (model not found). "
        "Set TALKLINE_GEMINI_MODEL to a Live audio model."
    ]


async def test_a_forgotten_handle_starts_a_fresh_session(
    service: TalklineGeminiLiveService, monkeypatch: pytest.MonkeyPatch, logged: list[str]
) -> None:
    async def sleep(_seconds: float) -> None:
        return None

    monkeypatch.setattr(gemini.asyncio, "sleep", sleep)
    service._session_resumption_handle = "handle-1"
    assert await service._handle_connection_error(Closed(1011, "blip"))
    assert await service._handle_connection_error(Closed(1008, "policy"))
    assert service._session_resumption_handle == "handle-1"
    assert await service._handle_connection_error(Closed(1008, "Session not found"))
    assert service._session_resumption_handle is None
    assert "Gemini forgot the resumption handle; starting a fresh session" in logged


async def test_a_reconnect_is_timed_from_its_first_attempt(
    service: TalklineGeminiLiveService, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def reconnect(_self: Any) -> None:
        await asyncio.sleep(0)

    monkeypatch.setattr(gemini.GeminiLiveLLMService, "_reconnect", reconnect)
    monkeypatch.setattr(gemini.time, "monotonic", lambda: 50.0)
    await service._reconnect()
    monkeypatch.setattr(gemini.time, "monotonic", lambda: 51.0)
    await service._reconnect()
    assert service._reconnect_started == 50.0


async def test_a_message_with_audio_lets_the_audio_move_on(
    service: TalklineGeminiLiveService,
) -> None:
    """Other ready tasks (the output transport's) run before the next message is read.

    A reply's audio arrives in a burst; the SDK hands over the messages one after another
    without waiting, so without a yield the whole burst was parsed before the first chunk
    could go out.
    """
    from google.genai.types import Blob, Content, LiveServerContent, LiveServerMessage, Part

    ran: list[str] = []
    asyncio.get_running_loop().call_soon(ran.append, "other task")
    audio = Part(inline_data=Blob(data=bytes(960), mime_type="audio/pcm;rate=24000"))
    content = LiveServerContent(model_turn=Content(role="model", parts=[audio]))
    await service._handle_server_message(LiveServerMessage(server_content=content))
    assert ran == ["other task"]


class Gate:
    """The speech gate as the hold reads it: windows in a row with nothing like speech."""

    quiet_windows = 0


def held_service(gate: Gate, **overrides: Any) -> TalklineGeminiLiveService:
    async def on_fatal(message: str) -> None:
        raise AssertionError(message)

    options = service_options(**({"gemini_pause_after_quiet_secs": 1.0} | overrides))
    return TalklineGeminiLiveService(options, on_fatal=on_fatal, quiet=gate)


CHUNK = 1024  # 32 ms at 16 kHz: one window of the gate


async def quiet_chunks(service: TalklineGeminiLiveService, gate: Gate, count: int) -> None:
    """``count`` chunks the gate scores quiet, each scored after it went on (as in the
    pipeline: the audio is pushed before the VAD looks at it)."""
    for _ in range(count):
        await service._send_user_audio(audio(CHUNK, 0))
        gate.quiet_windows += 1


async def test_a_second_of_quiet_pauses_the_upstream_and_speech_resumes_it() -> None:
    """After 1 s of quiet windows the stream pauses (audioStreamEnd, once); the first chunk
    after a speech-like window goes up with the newest second held before it, in one message."""
    gate = Gate()
    service = held_service(gate)
    upstream = Upstream()
    connect(service, upstream)
    await quiet_chunks(service, gate, 32)  # the 32nd is scored after it went on: 32 sent
    assert len(upstream.sent) == 32 and upstream.messages == ["audio"] * 32
    for fill in range(1, 41):  # 40 more quiet chunks, each distinct, held
        await service._send_user_audio(audio(CHUNK, fill))
        gate.quiet_windows += 1
    assert upstream.messages == ["audio"] * 32 + ["audioStreamEnd"]
    gate.quiet_windows = 0  # the gate heard something like speech in the newest chunk
    await service._send_user_audio(audio(CHUNK, 99))
    preroll = b"".join(bytes([fill]) * CHUNK for fill in range(1, 41))[-32000:]
    assert upstream.sent[-1][0] == preroll + bytes([99]) * CHUNK
    assert upstream.messages[-2:] == ["audioStreamEnd", "audio"]
    assert service.stats.quiet_unsent_secs == (40 * CHUNK - 32000) / 32000
    await service._send_user_audio(audio(CHUNK, 100))  # live again: sent as it comes
    assert upstream.sent[-1][0] == bytes([100]) * CHUNK


async def test_every_byte_is_sent_or_counted_as_unsent_quiet() -> None:
    gate = Gate()
    service = held_service(gate)
    upstream = Upstream()
    connect(service, upstream)
    fed = 0
    for speech_at in (50, 20, 200, 5, 260):  # quiet stretches, three long enough to pause
        while gate.quiet_windows < speech_at:
            await quiet_chunks(service, gate, 1)
            fed += CHUNK
        gate.quiet_windows = 0
    sent = sum(len(data) for data, _ in upstream.sent)
    assert sent + service.stats.quiet_unsent_secs * 32000 == fed
    assert upstream.messages.count("audioStreamEnd") == service.hold.pauses == 3  # type: ignore[union-attr]


async def test_a_pause_while_away_sends_no_stream_end_and_speech_waits_for_the_connection() -> None:
    gate = Gate()
    service = held_service(gate)
    connect(service, None)
    gate.quiet_windows = 100
    await service._send_user_audio(audio(CHUNK, 1))  # pauses: nothing kept, nothing sent
    assert not service._pending
    gate.quiet_windows = 0
    await service._send_user_audio(audio(CHUNK, 2))  # speech: kept with its preroll
    assert bytes(service._pending) == bytes([1]) * CHUNK + bytes([2]) * CHUNK
    upstream = Upstream()
    connect(service, upstream)
    await service._flush_pending()
    assert upstream.messages == ["audio"] and not service._pending


async def test_no_pause_when_the_setting_is_zero() -> None:
    gate = Gate()
    service = held_service(gate, gemini_pause_after_quiet_secs=0)
    upstream = Upstream()
    connect(service, upstream)
    await quiet_chunks(service, gate, 100)
    assert upstream.messages == ["audio"] * 100 and service.hold is None


async def test_a_chunk_arriving_during_a_flush_is_sent_once_and_in_order(
    service: TalklineGeminiLiveService,
) -> None:
    """The flush of kept audio waits on its sends; a chunk arriving meanwhile queues behind
    it (before: a second flush sent the first piece again)."""
    connect(service, None)
    await service._send_user_audio(audio(FLUSH_CHUNK_BYTES // 2, 1))
    upstream = Upstream(slow=True)
    connect(service, upstream)
    flush = asyncio.create_task(service._flush_pending())
    await asyncio.sleep(0)  # the flush is waiting on its send
    await service._send_user_audio(audio(640, 2))
    await flush
    await service._flush_pending()
    sent = b"".join(data for data, _ in upstream.sent)
    assert sent == bytes([1]) * (FLUSH_CHUNK_BYTES // 2) + bytes([2]) * 640


async def test_a_chunk_longer_than_the_preroll_is_kept_whole() -> None:
    """A client may send 2 s at once; held, it goes up whole when speech is scored in it."""
    gate = Gate()
    service = held_service(gate)
    upstream = Upstream()
    connect(service, upstream)
    gate.quiet_windows = 100
    await service._send_user_audio(audio(CHUNK, 1))  # pauses
    await service._send_user_audio(audio(64000, 2))  # 2 s, speech starting somewhere in it
    gate.quiet_windows = 0
    await service._send_user_audio(audio(CHUNK, 3))
    assert upstream.sent[-1][0] == bytes([2]) * 64000 + bytes([3]) * CHUNK


async def test_a_pause_while_audio_waits_is_announced_after_that_audio() -> None:
    """The pause starts while speech is still kept for the upstream: audioStreamEnd is owed,
    and sent once that audio has gone, not before it and not never."""
    gate = Gate()
    service = held_service(gate)
    connect(service, None)
    await service._send_user_audio(audio(CHUNK, 1))  # speech, kept while away
    gate.quiet_windows = 100
    await service._send_user_audio(audio(CHUNK, 2))  # the pause starts: nothing to tell yet
    upstream = Upstream()
    connect(service, upstream)
    await service._send_user_audio(audio(CHUNK, 3))  # connected, the speech not yet sent
    await service._flush_pending()
    await service._send_user_audio(audio(CHUNK, 4))  # still quiet: now it is told
    await service._send_user_audio(audio(CHUNK, 5))
    assert upstream.messages == ["audio", "audioStreamEnd"]
    assert upstream.sent == [(bytes([1]) * CHUNK, "audio/pcm;rate=16000")]


async def test_a_send_failing_mid_flush_keeps_the_order_for_the_next_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three pieces kept; the second fails to send; a chunk arrives meanwhile. The next
    connection gets the second piece, the third, then the chunk."""
    service = held_service(Gate(), gemini_buffer_secs=5.0)
    monkeypatch.setattr(service, "create_task", lambda coro, name: coro.close())
    connect(service, None)
    for fill, size in [(1, FLUSH_CHUNK_BYTES), (2, FLUSH_CHUNK_BYTES), (3, 1000)]:
        await service._send_user_audio(audio(size, fill))
    first = Upstream(fails_after=1)
    connect(service, first)
    await service._flush_pending()
    connect(service, None)
    await service._send_user_audio(audio(640, 4))
    second = Upstream()
    connect(service, second)
    await service._flush_pending()
    assert [data for data, _ in first.sent] == [bytes([1]) * FLUSH_CHUNK_BYTES]
    sent = b"".join(data for data, _ in second.sent)
    assert sent == bytes([2]) * FLUSH_CHUNK_BYTES + bytes([3]) * 1000 + bytes([4]) * 640


async def test_a_cancelled_flush_loses_nothing(service: TalklineGeminiLiveService) -> None:
    connect(service, None)
    await service._send_user_audio(audio(640, 1))
    connect(service, Upstream(slow=True))
    flush = asyncio.create_task(service._flush_pending())
    await asyncio.sleep(0)  # waiting on its send
    flush.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flush
    assert bytes(service._pending) == bytes([1]) * 640


async def test_a_pause_during_a_flush_is_announced_after_the_piece_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The last kept piece is on its way (out of the buffer, not yet sent) when the pause
    starts: the stream end waits for it, and when that send fails, it follows the piece
    on the next connection."""
    gate = Gate()
    service = held_service(gate)
    monkeypatch.setattr(service, "create_task", lambda coro, name: coro.close())
    connect(service, None)
    await service._send_user_audio(audio(CHUNK, 1))  # speech, kept while away

    class LosesAudio(Upstream):
        async def send(self, message: str) -> None:
            await asyncio.sleep(0)
            if "audioStreamEnd" not in message:
                raise ConnectionError("upstream gone")
            await super().send(message)

    first = LosesAudio()
    connect(service, first)
    flush = asyncio.create_task(service._flush_pending())
    await asyncio.sleep(0)  # the piece is in flight
    gate.quiet_windows = 100
    await service._send_user_audio(audio(CHUNK, 2))  # the pause starts meanwhile
    await flush  # the piece's send failed: first in line again
    second = Upstream()
    connect(service, second)
    await service._flush_pending()
    await service._send_user_audio(audio(CHUNK, 3))
    assert first.messages == []
    assert second.messages == ["audio", "audioStreamEnd"]
    assert second.sent == [(bytes([1]) * CHUNK, "audio/pcm;rate=16000")]
