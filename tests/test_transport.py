"""The guarded serializer: every kind of bad input becomes a clear error, never an exception."""

from __future__ import annotations

import json

import pipecat.frames.protobufs.frames_pb2 as frame_protos
import pytest
from pipecat.frames.frames import (
    InputAudioRawFrame,
    InputTransportMessageFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageUrgentFrame,
)
from pipecat.serializers.protobuf import ProtobufFrameSerializer

from talkline.client import audio_frame, message_frame, rtvi_message
from talkline.transport import ERRORS_PER_SECOND, GuardedSerializer, InputLimits


@pytest.fixture
def reports() -> list[str]:
    return []


@pytest.fixture
def serializer(reports: list[str]) -> GuardedSerializer:
    async def report(problem: str) -> None:
        reports.append(problem)

    async def violate(problem: str) -> None:
        reports.append(f"VIOLATION {problem}")

    return GuardedSerializer(
        limits=InputLimits(max_message_bytes=4096), report=report, violate=violate
    )


def text_frame() -> bytes:
    frame = frame_protos.Frame()  # type: ignore[attr-defined]
    frame.text.text = "hi"
    return bytes(frame.SerializeToString())


async def test_audio_at_the_pipeline_rate_passes(serializer: GuardedSerializer) -> None:
    frame = await serializer.deserialize(audio_frame(bytes(1024)))
    assert isinstance(frame, InputAudioRawFrame)
    assert frame.sample_rate == 16000 and frame.num_channels == 1 and len(frame.audio) == 1024


async def test_rtvi_message_passes(serializer: GuardedSerializer) -> None:
    frame = await serializer.deserialize(message_frame(rtvi_message("client-ready", {})))
    assert isinstance(frame, InputTransportMessageFrame)
    assert frame.message["type"] == "client-ready"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("text message", "text WebSocket messages are not accepted"),
        (b"\xff\xff\xff\xff", "not a valid protobuf Frame"),
        (b"", "the Frame is empty"),
        (b"x" * 5000, "over the 4096 byte limit"),
        (audio_frame(bytes(640), sample_rate=4000), "4000 Hz is not supported: send 8000 to"),
        (audio_frame(bytes(640), sample_rate=192000), "192000 Hz is not supported"),
        (audio_frame(bytes(640), sample_rate=0), "0 Hz is not supported"),
        (audio_frame(bytes(640), channels=0), "0 channels is not supported: send 1 to 8"),
        (audio_frame(bytes(640), channels=64), "64 channels is not supported"),
        (audio_frame(bytes(641)), "not whole 16-bit samples"),
        (audio_frame(bytes(6), channels=2), "6 bytes is not whole 16-bit samples for 2 channels"),
        (audio_frame(b""), "not whole 16-bit samples"),
        (text_frame(), "'text' frames are not accepted from clients"),
        (message_frame([1, 2]), "must be a JSON object"),  # type: ignore[arg-type]
        (message_frame({"type": "client-ready"}), '"label": "rtvi-ai"'),
        (message_frame({"label": "rtvi-ai", "type": "x", "data": 3}), '"data" must be an object'),
    ],
)
async def test_bad_input_is_reported_and_dropped(
    serializer: GuardedSerializer, reports: list[str], payload: bytes | str, expected: str
) -> None:
    assert await serializer.deserialize(payload) is None
    assert len(reports) == 1 and expected in reports[0], reports
    assert serializer.bad_inputs == 1


async def test_json_that_is_not_json_is_reported(
    serializer: GuardedSerializer, reports: list[str]
) -> None:
    frame = frame_protos.Frame()  # type: ignore[attr-defined]
    frame.message.data = "{not json"
    assert await serializer.deserialize(frame.SerializeToString()) is None
    assert "not JSON" in reports[0]


async def test_a_flood_of_bad_input_is_counted_but_not_echoed_every_time(
    serializer: GuardedSerializer, reports: list[str]
) -> None:
    for _ in range(100):
        await serializer.deserialize("spam")
    assert serializer.bad_inputs == 100
    assert len(reports) == ERRORS_PER_SECOND


@pytest.mark.parametrize(
    "wire",
    [
        audio_frame(bytes(range(256)) * 4),
        message_frame(rtvi_message("client-ready", {"version": "2.1.0", "about": {"x": 1}})),
        message_frame(rtvi_message("client-message", {"t": "ping", "d": {"n": 1}})),
    ],
    ids=["audio", "client-ready", "client-message"],
)
async def test_client_frames_decode_on_the_server_as_pipecat_decodes_them(
    serializer: GuardedSerializer, reports: list[str], wire: bytes
) -> None:
    """What the client sends, the server's serializer reads as Pipecat's own would."""
    ours = await serializer.deserialize(wire)
    pipecats = await ProtobufFrameSerializer().deserialize(wire)
    assert ours is not None and pipecats is not None and reports == []
    assert type(ours) is type(pipecats)
    if isinstance(ours, InputAudioRawFrame):
        assert isinstance(pipecats, InputAudioRawFrame)
        assert (ours.audio, ours.sample_rate, ours.num_channels) == (
            pipecats.audio,
            pipecats.sample_rate,
            pipecats.num_channels,
        )
    else:
        assert isinstance(ours, InputTransportMessageFrame)
        assert isinstance(pipecats, InputTransportMessageFrame)
        assert (
            ours.message
            == pipecats.message
            == json.loads(frame_protos.Frame.FromString(wire).message.data)  # type: ignore[attr-defined]
        )


async def test_server_frames_are_what_pipecat_serializes(serializer: GuardedSerializer) -> None:
    """Bot audio and RTVI messages leave the server exactly as Pipecat writes them."""
    audio = OutputAudioRawFrame(audio=bytes(960), sample_rate=24000, num_channels=1)
    message = OutputTransportMessageUrgentFrame(message={"label": "rtvi-ai", "type": "x"})
    for frame in (audio, message):
        assert await serializer.serialize(frame) == await ProtobufFrameSerializer().serialize(frame)
    assert serializer.audio_out == 1


async def test_interruption_frames_are_not_sent_to_clients(serializer: GuardedSerializer) -> None:
    """The JS clients cannot read InterruptionFrame; bot-interrupted tells them instead."""
    assert await serializer.serialize(InterruptionFrame()) is None
