"""The Gemini Live emulator, driven by the real google-genai SDK and by raw WebSocket clients."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import pytest_asyncio
from google import genai
from google.genai import errors, types
from google.genai.live import AsyncSession
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from talkline.audio import RATE, rms, silence, tone
from talkline.emulator import FaultKind, GeminiEmulator, cli
from talkline.emulator.wire import cut_reason, decode_b64, normalize

MODEL = "gemini-2.5-flash-native-audio-preview-12-2025"
CHUNK_MS = 50
WAIT = 5.0

# -- helpers ------------------------------------------------------------------


UTTERANCE = tone(1.0) + silence(1.0)


def live_config(**overrides: Any) -> types.LiveConnectConfig:
    fields: dict[str, Any] = {
        "response_modalities": [types.Modality.AUDIO],
        "session_resumption": types.SessionResumptionConfig(),
        "input_audio_transcription": types.AudioTranscriptionConfig(),
        "output_audio_transcription": types.AudioTranscriptionConfig(),
    }
    return types.LiveConnectConfig(**(fields | overrides))


def connect(
    emu: GeminiEmulator, model: str = MODEL, key: str = "test-key", **config: Any
) -> AbstractAsyncContextManager[AsyncSession]:
    client = genai.Client(api_key=key, http_options=emu.http_options())
    return client.aio.live.connect(model=model, config=live_config(**config))


async def send_audio(session: AsyncSession, pcm: bytes) -> None:
    step = 2 * RATE * CHUNK_MS // 1000
    for start in range(0, len(pcm), step):
        blob = types.Blob(data=pcm[start : start + step], mime_type="audio/pcm;rate=16000")
        await session.send_realtime_input(audio=blob)


async def messages(session: AsyncSession) -> AsyncIterator[types.LiveServerMessage]:
    """Every server message, across the turn boundaries where `receive()` stops."""
    while True:
        async for message in session.receive():
            yield message


async def collect_turn(session: AsyncSession) -> list[types.LiveServerMessage]:
    """Messages up to and including the next turnComplete."""
    async with asyncio.timeout(WAIT):
        return [m async for m in session.receive()]


async def next_matching(
    session: AsyncSession, predicate: Callable[[types.LiveServerMessage], Any]
) -> types.LiveServerMessage:
    async with asyncio.timeout(WAIT):
        async for message in messages(session):
            if predicate(message):
                return message
    raise AssertionError("unreachable")


def audio_of(turn: list[types.LiveServerMessage]) -> list[types.Blob]:
    return [
        part.inline_data
        for m in turn
        if m.server_content and m.server_content.model_turn
        for part in m.server_content.model_turn.parts or []
        if part.inline_data
    ]


def output_text(turn: list[types.LiveServerMessage]) -> str:
    return "".join(
        m.server_content.output_transcription.text or ""
        for m in turn
        if m.server_content and m.server_content.output_transcription
    )


def raw_connect(
    emu: GeminiEmulator, key: str | None = "raw-key", url: str | None = None
) -> ws_connect:
    headers = {"x-goog-api-key": key} if key else {}
    return ws_connect(url or emu.ws_url(), ssl=emu.ssl_context(), additional_headers=headers)


async def raw_setup(ws: ClientConnection, setup: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps({"setup": setup}))
    reply = await asyncio.wait_for(ws.recv(), WAIT)
    assert isinstance(reply, bytes), "the emulator sends JSON in binary frames"
    return dict(json.loads(reply))


async def raw_close_code(ws: ClientConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(WAIT):
            while True:
                await ws.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


@pytest_asyncio.fixture
async def emu() -> AsyncIterator[GeminiEmulator]:
    async with GeminiEmulator(pace=0, reply_seconds=0.3, chunk_bytes=4800) as emulator:
        yield emulator


# -- conversation ---------------------------------------------------------------


async def test_audio_turn_gets_transcripts_audio_and_turn_complete(emu: GeminiEmulator) -> None:
    """A spoken turn ends in silence and gets transcripts, 24 kHz audio and turnComplete."""
    async with connect(emu) as session:
        await send_audio(session, UTTERANCE)
        turn = await collect_turn(session)

    contents = [m.server_content for m in turn if m.server_content]
    assert contents[0].input_transcription is not None
    assert contents[0].input_transcription.text == "turn 1"
    audio = audio_of(turn)
    assert len(audio) >= 2
    assert {blob.mime_type for blob in audio} == {"audio/pcm;rate=24000"}
    pcm = b"".join(blob.data or b"" for blob in audio)
    assert len(pcm) == 2 * int(0.3 * 24000)
    assert rms(pcm) > 1000
    assert output_text(turn) == "reply 1"
    assert any(c.generation_complete for c in contents)
    last = turn[-1]
    assert last.server_content is not None and last.server_content.turn_complete
    usage = last.usage_metadata
    assert usage is not None and usage.prompt_token_count and usage.response_token_count
    assert usage.total_token_count == usage.prompt_token_count + usage.response_token_count


async def test_emulator_records_connection_and_all_audio(emu: GeminiEmulator) -> None:
    """The emulator records the path, setup, every audio byte and turn timestamps, not the key."""
    async with connect(emu) as session:
        await send_audio(session, UTTERANCE)
        await collect_turn(session)
        await emu.wait_for(lambda: emu.audio_bytes == len(UTTERANCE), WAIT)

    (record,) = emu.connections
    assert record.api_version == "v1beta" and record.method == "BidiGenerateContent"
    assert record.key_source == "header"
    assert record.headers["x-goog-api-key"] == "<redacted>"
    assert record.setup is not None and record.setup["model"] == f"models/{MODEL}"
    assert "session_resumption" in record.setup
    assert record.audio_bytes == len(UTTERANCE)
    assert "test-key" not in repr(record)
    (turn,) = record.turns
    assert turn.source == "audio" and not turn.interrupted
    assert turn.first_audio_at is not None and turn.first_audio_at >= turn.ended_at
    assert turn.completed_at is not None and turn.reply_chunks == 3
    assert all("realtime_input" in m for m in record.messages[1:])


async def test_key_is_never_logged(emu: GeminiEmulator, caplog: pytest.LogCaptureFixture) -> None:
    """Even at DEBUG level the emulator's logs never contain the API key."""
    caplog.set_level(logging.DEBUG)
    bad_path = emu.ws_url().replace("BidiGenerateContent", "Nope") + "?key=secret-key-42"
    with pytest.raises(InvalidStatus):
        async with ws_connect(bad_path, ssl=emu.ssl_context()):
            pass
    async with raw_connect(emu, key="secret-key-42") as ws:
        await raw_setup(ws, {"model": f"models/{MODEL}"})
    server_side = [r for r in caplog.records if not r.name.startswith("websockets.client")]
    assert server_side, "the emulator logged nothing at all"
    assert not any("secret-key-42" in r.getMessage() for r in server_side)


async def test_text_and_client_content_turns_are_answered(emu: GeminiEmulator) -> None:
    """realtime_input.text and client_content with turnComplete each start a reply."""
    async with connect(emu) as session:
        await session.send_realtime_input(text="hello")
        first = await collect_turn(session)
        turns = types.Content(role="user", parts=[types.Part(text="and now?")])
        await session.send_client_content(turns=turns, turn_complete=True)
        second = await collect_turn(session)

    assert output_text(first) == "reply 1"
    assert output_text(second) == "reply 2"
    assert [t.source for t in emu.turns] == ["text", "client_content"]


async def test_manual_activity_marks_the_turn(emu: GeminiEmulator) -> None:
    """With automatic activity detection off, activityStart/activityEnd delimit the turn."""
    manual = types.RealtimeInputConfig(
        automatic_activity_detection=types.AutomaticActivityDetection(disabled=True)
    )
    async with connect(emu, realtime_input_config=manual) as session:
        await session.send_realtime_input(activity_start=types.ActivityStart())
        await send_audio(session, tone(0.3))
        await session.send_realtime_input(activity_end=types.ActivityEnd())
        turn = await collect_turn(session)

    assert output_text(turn) == "reply 1"
    assert emu.turns[0].source == "activity"
    assert emu.turns[0].user_audio_bytes == len(tone(0.3))


async def test_speech_during_reply_interrupts_it() -> None:
    """User speech arriving while the reply plays cuts it with `interrupted`."""
    async with GeminiEmulator(pace=1.0, reply_seconds=5.0) as emu, connect(emu) as session:
        await send_audio(session, UTTERANCE)
        await next_matching(session, lambda m: audio_of([m]))
        emu.config.reply_seconds = 0.2
        await send_audio(session, tone(0.4))
        seen: list[types.LiveServerMessage] = []
        async with asyncio.timeout(WAIT):
            async for message in messages(session):
                seen.append(message)
                if message.server_content and message.server_content.interrupted:
                    break
        await send_audio(session, silence(1.0))
        after = await collect_turn(session)

    assert not any(m.server_content and m.server_content.turn_complete for m in seen)
    assert emu.turns[0].interrupted and emu.turns[0].completed_at is None
    assert output_text(after) == "reply 2"


# -- raw WebSocket clients --------------------------------------------------------


async def test_raw_client_v1alpha_double_slash_query_key_camel_case(emu: GeminiEmulator) -> None:
    """A raw camelCase client on `//ws/...v1alpha...?key=` with standard base64 gets a reply."""
    url = emu.ws_url("v1alpha").replace("/ws/", "//ws/") + "?key=raw-key"
    data = base64.b64encode(UTTERANCE).decode().rstrip("=")
    chunk = {"mimeType": "audio/pcm;rate=16000", "data": data}
    async with ws_connect(url, ssl=emu.ssl_context()) as ws:
        setup = {"model": f"models/{MODEL}", "outputAudioTranscription": {}}
        assert await raw_setup(ws, {**setup, "generationConfig": {"responseModalities": ["AUDIO"]}})
        await ws.send(json.dumps({"realtimeInput": {"mediaChunks": [chunk]}}))
        replies: list[dict[str, Any]] = []
        async with asyncio.timeout(WAIT):
            while not replies or "turnComplete" not in replies[-1].get("serverContent", {}):
                raw = await ws.recv()
                assert isinstance(raw, bytes)
                replies.append(json.loads(raw))

    record = emu.connections[0]
    assert record.api_version == "v1alpha" and record.key_source == "query"
    assert "raw-key" not in record.path and record.path.startswith("//ws/")
    assert record.audio_bytes == len(UTTERANCE)
    assert {"serverContent": {"outputTranscription": {"text": "reply 1"}}} in replies


async def test_constrained_endpoint_takes_a_token_header(emu: GeminiEmulator) -> None:
    """The ephemeral-token endpoint accepts `Authorization: Token ...`."""
    url = emu.ws_url("v1alpha", "BidiGenerateContentConstrained")
    headers = {"Authorization": "Token auth_tokens/abc"}
    async with ws_connect(url, ssl=emu.ssl_context(), additional_headers=headers) as ws:
        assert await raw_setup(ws, {"model": f"models/{MODEL}"}) == {"setupComplete": {}}
    record = emu.connections[0]
    assert (record.method, record.key_source) == ("BidiGenerateContentConstrained", "token")
    assert record.headers["authorization"] == "<redacted>"


async def test_unknown_path_is_refused_with_404(emu: GeminiEmulator) -> None:
    """A path that is not a Live API endpoint is refused before the WebSocket upgrade."""
    url = f"wss://127.0.0.1:{emu.port}/ws/google.ai.generativelanguage.v1beta.Nope?key=k"
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(url, ssl=emu.ssl_context()):
            pass
    assert refused.value.response.status_code == 404
    assert emu.connections == []


async def test_second_setup_closes_1007(emu: GeminiEmulator) -> None:
    """A second setup message closes the connection with 1007."""
    async with raw_connect(emu) as ws:
        ws_setup = {"model": f"models/{MODEL}"}
        assert await raw_setup(ws, ws_setup) == {"setupComplete": {}}
        await ws.send(json.dumps({"setup": ws_setup}))
        code, reason = await raw_close_code(ws)
    assert (code, reason) == (1007, "Request contains an invalid argument.")


async def test_first_message_must_be_setup(emu: GeminiEmulator) -> None:
    """Anything but setup as the first message closes with 1007."""
    async with raw_connect(emu) as ws:
        await ws.send(json.dumps({"realtimeInput": {"text": "hi"}}))
        code, _ = await raw_close_code(ws)
    assert code == 1007


async def test_missing_key_is_refused(emu: GeminiEmulator) -> None:
    """A connection with no API key at all is closed with 1008 after setup."""
    async with raw_connect(emu, key=None) as ws:
        await ws.send(json.dumps({"setup": {"model": f"models/{MODEL}"}}))
        code, reason = await raw_close_code(ws)
    assert code == 1008 and reason.startswith("Method doesn't allow unregistered callers")


# -- setup refusals through the SDK ------------------------------------------------


async def test_bad_key_makes_connect_raise_1007() -> None:
    """An API key outside valid_keys makes the SDK's connect() raise APIError 1007."""
    async with GeminiEmulator(valid_keys=frozenset({"good-key"})) as emu:
        with pytest.raises(errors.APIError) as error:
            async with connect(emu, key="bad-key"):
                pass
        async with connect(emu, key="good-key"):
            pass
    assert error.value.code == 1007
    assert error.value.details == "API key not valid. Please pass a valid API key."
    assert [c.close_code for c in emu.connections] == [1007, 1000]


async def test_unknown_model_makes_connect_raise_1008(emu: GeminiEmulator) -> None:
    """An unknown model closes with 1008 and the real not-found reason, cut to 123 bytes."""
    with pytest.raises(errors.APIError) as error:
        async with connect(emu, model="gemini-nope"):
            pass
    assert error.value.code == 1008
    reason = str(error.value.details)
    assert reason.startswith("models/gemini-nope is not found for API version v1beta, or is not")
    assert len(reason.encode()) == 123


# -- session resumption ------------------------------------------------------------


def handle_of(message: types.LiveServerMessage) -> str | None:
    update = message.session_resumption_update
    return update.new_handle if update and update.resumable else None


async def test_resumed_session_continues_the_conversation(emu: GeminiEmulator) -> None:
    """Reconnecting with the latest handle keeps the turn counter going."""
    async with connect(emu) as session:
        assert handle_of(await next_matching(session, handle_of))
        await session.send_realtime_input(text="one")
        await collect_turn(session)
        handle = handle_of(await next_matching(session, handle_of))
    assert handle is not None

    resumption = types.SessionResumptionConfig(handle=handle)
    async with connect(emu, session_resumption=resumption) as session:
        await session.send_realtime_input(text="two")
        turn = await collect_turn(session)

    assert output_text(turn) == "reply 2"
    first, second = emu.connections
    assert second.resumed_handle == handle
    assert second.conversation == first.conversation
    assert handle in first.handles


async def test_unknown_handle_makes_connect_raise_1008(emu: GeminiEmulator) -> None:
    """A handle the emulator never issued closes with 1008 session not found."""
    resumption = types.SessionResumptionConfig(handle="stale-handle")
    with pytest.raises(errors.APIError) as error:
        async with connect(emu, session_resumption=resumption):
            pass
    assert error.value.code == 1008
    assert error.value.details == "BidiGenerateContent session not found"


# -- faults --------------------------------------------------------------------------


async def test_go_away_after_turn_then_deadline_close(emu: GeminiEmulator) -> None:
    """goAway(timeLeft) follows turn 1; the connection closes 1011 when the time is up."""
    emu.go_away(after_turn=1, time_left=0.2)
    async with connect(emu) as session:
        await session.send_realtime_input(text="hi")
        await collect_turn(session)
        go_away = await next_matching(session, lambda m: m.go_away)
        with pytest.raises(errors.APIError) as error:
            await next_matching(session, lambda m: False)

    assert go_away.go_away is not None and go_away.go_away.time_left == "0.200s"
    assert error.value.code == 1011
    assert error.value.details == "Deadline expired before operation could complete."
    assert emu.connections[0].sent_go_away


async def test_go_away_on_a_timer(emu: GeminiEmulator) -> None:
    """A goAway armed with after_seconds arrives without any turn."""
    fault = emu.go_away(after_seconds=0.05, time_left=2)
    async with connect(emu) as session:
        go_away = await next_matching(session, lambda m: m.go_away)
    assert go_away.go_away is not None and go_away.go_away.time_left == "2s"
    assert fault.fired


async def test_close_mid_reply(emu: GeminiEmulator) -> None:
    """A close scheduled after 2 reply chunks cuts the reply with the chosen code and reason."""
    emu.schedule_close(1011, "Internal error occurred.", after_reply_chunks=2)
    received: list[types.LiveServerMessage] = []
    async with connect(emu) as session:
        await session.send_realtime_input(text="hi")
        with pytest.raises(errors.APIError) as error:
            async with asyncio.timeout(WAIT):
                async for message in messages(session):
                    received.append(message)

    assert (error.value.code, error.value.details) == (1011, "Internal error occurred.")
    assert len(audio_of(received)) == 2
    assert not any(m.server_content and m.server_content.turn_complete for m in received)


async def test_drop_aborts_without_close_frame(emu: GeminiEmulator) -> None:
    """A TCP drop mid-reply reaches the SDK as abnormal closure 1006."""
    emu.drop(after_reply_chunks=1)
    async with connect(emu) as session:
        await session.send_realtime_input(text="hi")
        with pytest.raises(errors.APIError) as error:
            await next_matching(session, lambda m: False)
    assert error.value.code == 1006


async def test_stall_stops_answering_but_keeps_recording(emu: GeminiEmulator) -> None:
    """After a stall the emulator answers nothing yet still records what arrives."""
    emu.stall(after_turn=1)
    async with connect(emu) as session:
        await session.send_realtime_input(text="one")
        await collect_turn(session)
        await session.send_realtime_input(text="two")
        await emu.wait_for(lambda: len(emu.connections[0].messages) == 3, WAIT)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await next_matching(session, lambda m: m.server_content)
    assert len(emu.turns) == 1


# -- command line and wire helpers -----------------------------------------------------


def test_cli_flags_configure_the_emulator() -> None:
    """CLI flags set the behaviour knobs and arm one fault per flag."""
    flags = "--port 0 --response-delay 0.6 --reply-seconds 2 --valid-key k1"
    flags += " --go-away-after-turn 1 --close-after-chunks 3 --close-code 1011"
    args = cli.build_parser().parse_args(flags.split())
    emu = cli.emulator_from_args(args)
    assert emu.config.response_delay == 0.6 and emu.config.reply_seconds == 2
    assert emu.config.valid_keys == frozenset({"k1"})
    kinds = [(f.kind, f.after_turn, f.after_reply_chunks, f.code) for f in emu.faults]
    assert (FaultKind.GO_AWAY, 1, None, 1011) in kinds
    assert (FaultKind.CLOSE, None, 3, 1011) in kinds


class Notebook(io.StringIO):
    """A text stream one can wait on."""

    def __init__(self) -> None:
        super().__init__()
        self.written = asyncio.Event()

    def write(self, text: str) -> int:
        self.written.set()
        return super().write(text)

    async def wait_for_text(self, text: str) -> None:
        while text not in self.getvalue():
            self.written.clear()
            await self.written.wait()


async def test_serve_forever_prints_how_to_connect() -> None:
    """serve_forever prints the base URL, the CA file and an env line, then serves."""
    out = Notebook()
    emu = GeminiEmulator(pace=0, reply_seconds=0.1)
    task = asyncio.create_task(cli.serve_forever(emu, out))
    try:
        async with asyncio.timeout(WAIT):
            await out.wait_for_text("GOOGLE_GEMINI_BASE_URL")
        async with connect(emu) as session:
            await session.send_realtime_input(text="hi")
            assert output_text(await collect_turn(session)) == "reply 1"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert emu.base_url in out.getvalue()
    assert f"SSL_CERT_FILE={emu.ca_file}" in out.getvalue()


def test_wire_helpers_accept_both_spellings_and_alphabets() -> None:
    """Keys normalise to snake_case and base64 decodes in both alphabets without padding."""
    raw = bytes(range(250, 256)) + b"\xfb\xff"
    assert decode_b64(base64.urlsafe_b64encode(raw).decode().rstrip("=")) == raw
    assert decode_b64(base64.b64encode(raw).decode()) == raw
    assert normalize({"realtimeInput": {"mediaChunks": [{"mimeType": "x"}]}}) == {
        "realtime_input": {"media_chunks": [{"mime_type": "x"}]}
    }
    assert len(cut_reason("é" * 100).encode()) <= 123


async def test_first_audio_is_stamped_between_encoding_and_writing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bench's outbound latency starts at this stamp: building the message is the
    emulator's work, so it comes before; writing it comes after, so it cannot be heard
    before its stamp."""
    from types import SimpleNamespace

    from talkline.emulator import replies, wire
    from talkline.emulator.records import TurnRecord
    from talkline.emulator.state import EmulatorConfig

    turn = TurnRecord(1, "audio", 0, ended_at=0.0)
    steps: list[tuple[str, bool]] = []
    real_frame = wire.frame

    def frame(message: dict[str, Any]) -> bytes:
        steps.append(("encoded", turn.first_audio_at is not None))
        return real_frame(message)

    async def send_frame(data: bytes) -> None:
        steps.append(("written", turn.first_audio_at is not None))

    async def changed() -> None:
        pass

    monkeypatch.setattr(wire, "frame", frame)
    session = SimpleNamespace(
        config=EmulatorConfig(pace=0.0, reply_seconds=0.1),
        send_frame=send_frame,
        shared=SimpleNamespace(recorder=SimpleNamespace(changed=changed), faults=[]),
        record=SimpleNamespace(index=0),
    )
    assert await replies.Reply(session, turn)._send_audio()  # type: ignore[arg-type]
    # (step, whether first_audio_at was stamped by then)
    assert steps[:2] == [("encoded", False), ("written", True)]
