"""The provider fakes, driven by Pipecat's own Deepgram, ElevenLabs and OpenAI services."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from openai import APIConnectionError, APIStatusError, AsyncOpenAI
from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStoppedFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.elevenlabs.tts import ElevenLabsTTSService
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.workers.runner import WorkerRunner
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from talkline.audio import RATE, peak, silence, tone
from tests.fakes import DeepgramFake, ElevenLabsFake, OpenAIFake

OUT_RATE = 24000
CHUNK_MS = 20
WAIT = 5.0
VOICE = "fake-voice-1"
TTS_MODEL = "eleven_flash_v2_5"


def audio_frames(pcm: bytes) -> list[InputAudioRawFrame]:
    step = 2 * RATE * CHUNK_MS // 1000
    return [
        InputAudioRawFrame(audio=pcm[i : i + step], sample_rate=RATE, num_channels=1)
        for i in range(0, len(pcm), step)
    ]


# -- a tiny pipeline: taps on both sides of one service ---------------------------------------


class Tap(FrameProcessor):
    """Passes every frame on and keeps those travelling in `direction`."""

    def __init__(self, direction: FrameDirection) -> None:
        super().__init__()
        self.direction = direction
        self.frames: list[Frame] = []
        self._changed = asyncio.Condition()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == self.direction:
            self.frames.append(frame)
            async with self._changed:
                self._changed.notify_all()
        await self.push_frame(frame, direction)

    def of(self, kind: type[Frame]) -> list[Frame]:
        return [f for f in self.frames if isinstance(f, kind)]

    async def wait_for(self, predicate: Callable[[], bool], within: float = WAIT) -> None:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(predicate)


@dataclass
class Harness:
    worker: PipelineWorker
    up: Tap
    down: Tap

    async def send(self, *frames: Frame) -> None:
        for frame in frames:
            await self.worker.queue_frame(frame)


@asynccontextmanager
async def running(service: FrameProcessor, *, end: bool = True) -> AsyncIterator[Harness]:
    """`service` in a started pipeline; ended (or cancelled) and awaited on the way out."""
    up, down = Tap(FrameDirection.UPSTREAM), Tap(FrameDirection.DOWNSTREAM)
    worker = PipelineWorker(
        Pipeline([up, service, down]),
        params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=OUT_RATE),
        cancel_on_idle_timeout=False,
        enable_rtvi=False,
    )
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def on_started(_worker: PipelineWorker, _frame: Frame) -> None:
        started.set()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    run = asyncio.create_task(runner.run())
    try:
        async with asyncio.timeout(WAIT):
            await started.wait()
        yield Harness(worker, up, down)
    finally:
        if end:
            await worker.queue_frame(EndFrame())
        else:
            await worker.cancel()
        async with asyncio.timeout(10):
            await run


def errors(harness: Harness) -> list[str]:
    return [f.error for f in harness.up.of(ErrorFrame) if isinstance(f, ErrorFrame)]


# -- Deepgram ------------------------------------------------------------------------------------


def deepgram(fake: DeepgramFake, key: str = "test-key") -> DeepgramSTTService:
    return DeepgramSTTService(api_key=key, base_url=fake.base_url)


async def test_deepgram_transcribes_an_utterance_through_pipecat() -> None:
    """Speech then silence through DeepgramSTTService comes back as the fake's transcript."""
    pcm = tone(0.8) + silence(0.5)
    async with DeepgramFake(transcript="hello from deepgram") as fake:
        async with running(deepgram(fake)) as harness:
            await harness.send(*audio_frames(pcm))
            await harness.down.wait_for(lambda: bool(harness.down.of(TranscriptionFrame)))
            await fake.wait_for(lambda: fake.audio_bytes == len(pcm))

        (final,) = harness.down.of(TranscriptionFrame)
        assert isinstance(final, TranscriptionFrame)
        assert final.text == "hello from deepgram"
        assert [f.text for f in harness.down.of(InterimTranscriptionFrame)] == ["hello"]  # type: ignore[attr-defined]
        (connection,) = fake.connections
        assert connection.path == "/v1/listen"
        assert connection.params["encoding"] == "linear16"
        assert connection.params["sample_rate"] == "16000"
        assert connection.params["model"] == "nova-3-general"
        assert connection.auth_scheme == "Token" and connection.key_accepted
        assert connection.headers["authorization"] == "<redacted>"
        assert bytes(connection.audio) == pcm
        assert [u.cause for u in connection.utterances] == ["silence"]
        assert connection.message_types[-1] == "CloseStream"
        assert not errors(harness)


async def test_deepgram_finalize_sends_the_final_result_at_once() -> None:
    """A VAD stop mid-speech makes Pipecat send Finalize; the fake answers from_finalize."""
    async with DeepgramFake() as fake:
        async with running(deepgram(fake)) as harness:
            await harness.send(*audio_frames(tone(0.5)))
            await fake.wait_for(lambda: fake.audio_bytes >= len(tone(0.5)))
            await harness.send(VADUserStoppedSpeakingFrame())
            await harness.down.wait_for(lambda: bool(harness.down.of(TranscriptionFrame)))

        (connection,) = fake.connections
        assert "Finalize" in connection.message_types
        assert [u.cause for u in connection.utterances] == ["finalize"]
        finals = [m for m in connection.sent if m["type"] == "Results" and m["is_final"]]
        assert finals[0]["from_finalize"] is True


async def test_deepgram_bad_key_is_refused_with_http_401() -> None:
    """A wrong key gets HTTP 401 at the handshake, which Pipecat reports as an ErrorFrame."""
    async with DeepgramFake(api_key="right-key") as fake:
        async with running(deepgram(fake, key="wrong-key"), end=False) as harness:
            await harness.up.wait_for(lambda: bool(errors(harness)))

        assert "401" in errors(harness)[0]
        (connection,) = fake.connections
        assert connection.status == 401 and not connection.key_accepted


# -- ElevenLabs ----------------------------------------------------------------------------------


def elevenlabs(
    fake: ElevenLabsFake, key: str = "test-key", **kwargs: object
) -> ElevenLabsTTSService:
    settings = ElevenLabsTTSService.Settings(voice=VOICE, model=TTS_MODEL)
    return ElevenLabsTTSService(api_key=key, url=fake.url, settings=settings, **kwargs)  # type: ignore[arg-type]


async def test_elevenlabs_speaks_text_through_pipecat() -> None:
    """A TTSSpeakFrame comes back as non-silent 24 kHz audio and the context ends with isFinal."""
    text = "Hello from the fake voice."
    async with ElevenLabsFake(ms_per_char=40) as fake:
        async with running(elevenlabs(fake)) as harness:
            await harness.send(TTSSpeakFrame(text))
            await harness.down.wait_for(lambda: bool(harness.down.of(TTSStoppedFrame)))

        audio = b"".join(f.audio for f in harness.down.of(TTSAudioRawFrame))  # type: ignore[attr-defined]
        expected_bytes = 2 * int(round(fake.audio_seconds(text), 3) * OUT_RATE)
        assert len(audio) == expected_bytes
        assert peak(audio) > 3000
        assert {f.sample_rate for f in harness.down.of(TTSAudioRawFrame)} == {OUT_RATE}  # type: ignore[attr-defined]
        (connection,) = fake.connections
        assert connection.voice_id == VOICE
        assert connection.model_id == TTS_MODEL
        assert connection.params["output_format"] == "pcm_24000"
        assert connection.headers["xi-api-key"] == "<redacted>" and connection.key_accepted
        (context,) = connection.contexts.values()
        assert context.text.strip() == text
        assert context.final_sent and not context.interrupted
        assert connection.messages[-1] == {"close_socket": True}
        assert not errors(harness)


async def test_elevenlabs_interruption_closes_the_context_and_stops_audio() -> None:
    """A barge-in mid-reply makes Pipecat close the unflushed context; the fake stops its audio."""
    sentence = "This reply is long enough to be cut off midway."
    async with ElevenLabsFake(ms_per_char=60, max_seconds=3.0, chunk_delay=0.05) as fake:
        async with running(elevenlabs(fake)) as harness:
            # An LLM reply still streaming: its first sentence is spoken, nothing is flushed yet.
            await harness.send(
                LLMFullResponseStartFrame(), LLMTextFrame(sentence), LLMTextFrame(" And")
            )
            await fake.wait_for(lambda: any(c.audio_messages >= 2 for c in fake.contexts))
            await harness.send(InterruptionFrame())
            await fake.wait_for(lambda: any(c.final_sent for c in fake.contexts))

        (context,) = fake.contexts
        assert context.text.strip() == sentence
        assert context.closed and context.interrupted and context.flushes == 0
        assert context.audio_messages < 30  # 3 s of audio is 30 chunks of 100 ms


async def test_elevenlabs_bad_key_closes_with_policy_violation() -> None:
    """A wrong xi-api-key gets close 1008, which Pipecat reports as an ErrorFrame."""
    async with ElevenLabsFake(api_key="right-key") as fake:
        service = elevenlabs(fake, key="wrong-key", reconnect_on_error=False)
        async with running(service, end=False) as harness:
            await harness.up.wait_for(lambda: bool(errors(harness)))

        assert "1008" in errors(harness)[0]
        assert fake.connections[0].close_code == 1008
        assert not fake.connections[0].key_accepted


# -- OpenAI ----------------------------------------------------------------------------------------


@asynccontextmanager
async def openai_llm(fake: OpenAIFake, key: str = "test-key") -> AsyncIterator[OpenAILLMService]:
    settings = OpenAILLMService.Settings(model="gpt-4.1")
    service = OpenAILLMService(api_key=key, base_url=fake.base_url, settings=settings)
    try:
        yield service
    finally:
        # Pipecat 1.14 never closes its AsyncOpenAI client, whose pool keeps the socket open.
        await service._client.close()


def user_says(text: str) -> LLMContextFrame:
    return LLMContextFrame(LLMContext(messages=[{"role": "user", "content": text}]))


async def test_openai_streams_the_reply_through_pipecat() -> None:
    """An LLMContext with a user message comes back as LLMTextFrame chunks of the echo reply."""
    async with OpenAIFake() as fake:
        async with openai_llm(fake) as llm, running(llm) as harness:
            await harness.send(user_says("what time is it"))
            await harness.down.wait_for(lambda: bool(harness.down.of(LLMFullResponseEndFrame)))

        texts = [f.text for f in harness.down.of(LLMTextFrame)]  # type: ignore[attr-defined]
        assert "".join(texts) == "I heard: what time is it"
        assert len(texts) > 1
        (request,) = fake.completions
        assert request.body is not None
        assert request.body["model"] == "gpt-4.1"
        assert request.body["stream"] is True
        assert request.body["stream_options"] == {"include_usage": True}
        assert request.messages[-1] == {"role": "user", "content": "what time is it"}
        assert request.headers["authorization"] == "<redacted>"
        assert request.completed and not errors(harness)


async def test_openai_bad_key_is_refused_with_401() -> None:
    """A wrong key gets 401 invalid_api_key, which Pipecat reports as an ErrorFrame."""
    async with OpenAIFake(api_key="right-key") as fake:
        async with openai_llm(fake, key="wrong-key") as llm, running(llm) as harness:
            await harness.send(user_says("hello"))
            await harness.up.wait_for(lambda: bool(errors(harness)))

        assert "Error code: 401 - Incorrect API key provided" in errors(harness)[0]
        assert fake.completions[0].status == 401


async def test_openai_models_and_a_whole_completion_through_the_sdk() -> None:
    """The openai SDK lists the fake's models and gets a non-streamed completion."""
    async with OpenAIFake() as fake:
        client = AsyncOpenAI(api_key="test-key", base_url=fake.base_url)
        async with client:
            models = await client.models.list()
            reply = await client.chat.completions.create(
                model="gpt-4.1", messages=[{"role": "user", "content": "ping"}]
            )

        assert [m.id for m in models.data] == ["gpt-4.1", "gpt-4o-mini"]
        assert reply.choices[0].message.content == "I heard: ping"
        assert reply.usage is not None and reply.usage.total_tokens > 0


# -- the handshake, seen from raw clients --------------------------------------------------


async def test_websocket_fakes_keep_their_server_header_and_serve_options() -> None:
    """Deepgram takes the key as a `token` subprotocol; ElevenLabs takes messages over 1 MiB."""
    async with DeepgramFake() as fake:
        url = f"{fake.listen_url}?encoding=linear16&sample_rate=16000"
        offered = [Subprotocol("token"), Subprotocol("test-key")]
        async with ws_connect(url, subprotocols=offered) as ws:
            assert ws.response is not None
            assert ws.response.headers["Server"] == "talkline-deepgram-fake"
            assert ws.subprotocol == "token"
    async with ElevenLabsFake() as fake:
        headers = {"xi-api-key": "test-key"}
        async with ws_connect(fake.stream_url(VOICE), additional_headers=headers) as ws:
            assert ws.response is not None
            assert ws.response.headers["Server"] == "talkline-elevenlabs-fake"
            await ws.send(json.dumps({"text": " ", "context_id": "big", "pad": "x" * 2_000_000}))
            await fake.wait_for(lambda: "big" in fake.connections[0].contexts)


# -- faults, seen from raw clients -----------------------------------------------------------


async def test_deepgram_close_mid_stream_sends_the_close_code() -> None:
    """An armed fault closes the stream with 1011 once enough audio has arrived."""
    async with DeepgramFake() as fake:
        fault = fake.close_mid_stream(after_audio_bytes=3200)
        url = f"{fake.listen_url}?encoding=linear16&sample_rate=16000"
        headers = {"Authorization": "Token test-key"}
        async with ws_connect(url, additional_headers=headers) as ws:
            for frame in audio_frames(tone(0.3)):
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(frame.audio)
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()

        assert fault.fired
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
        assert closed.value.rcvd.reason.endswith("dpgr.am/net0001")


async def test_elevenlabs_inactivity_and_context_limit_close_with_1008() -> None:
    """Silence past inactivity_timeout, or a sixth open context, closes the socket with 1008."""
    async with ElevenLabsFake() as fake:
        headers = {"xi-api-key": "test-key"}
        url = fake.stream_url(VOICE, inactivity_timeout="0.2")
        async with ws_connect(url, additional_headers=headers) as ws:
            with pytest.raises(ConnectionClosed) as idle:
                await ws.recv()
        async with ws_connect(fake.stream_url(VOICE), additional_headers=headers) as ws:
            for n in range(6):
                await ws.send(json.dumps({"text": " ", "context_id": f"ctx-{n}"}))
            error = json.loads(await ws.recv())
            with pytest.raises(ConnectionClosed) as crowded:
                await ws.recv()

    assert idle.value.rcvd is not None and idle.value.rcvd.code == 1008
    assert idle.value.rcvd.reason.startswith("Have not received a new text input")
    assert len(idle.value.rcvd.reason.encode()) <= 123
    assert error["error"] == "max_active_conversations"
    assert crowded.value.rcvd is not None and crowded.value.rcvd.code == 1008


async def test_openai_overloaded_slow_and_down() -> None:
    """503 with the error JSON, a slow first chunk, and connection refused once stopped."""
    async with OpenAIFake(first_chunk_delay=0.3) as fake:
        client = AsyncOpenAI(api_key="test-key", base_url=fake.base_url, max_retries=0)
        async with client:
            fake.fail_next(503)
            with pytest.raises(APIStatusError) as overloaded:
                await client.models.list()
            started = time.monotonic()
            stream = await client.chat.completions.create(
                model="gpt-4.1", messages=[{"role": "user", "content": "slow"}], stream=True
            )
            pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            waited = time.monotonic() - started
            await fake.stop()
            with pytest.raises(APIConnectionError):
                await client.models.list()

    assert overloaded.value.status_code == 503
    assert overloaded.value.body == {
        "message": "The server is overloaded or not ready yet.",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    assert "".join(pieces) == "I heard: slow" and waited >= 0.3
