"""GuardedSerializer's limits, counters and words, in-process on a clock the test moves."""

from __future__ import annotations

import pytest
from pipecat.frames.frames import InputAudioRawFrame, OutputAudioRawFrame

import talkline.transport
from talkline.client import audio_frame, message_frame, rtvi_message
from talkline.transport import ERRORS_PER_SECOND, GuardedSerializer, InputLimits
from tests.support import Clock

CHUNK = bytes(1024)  # 32 ms of 16 kHz audio
READY = message_frame(rtvi_message("client-ready", {}))


class Said:
    """What the serializer told the client (``reports``) and why it closed (``violations``)."""

    def __init__(self) -> None:
        self.reports: list[str] = []
        self.violations: list[str] = []

    async def report(self, problem: str) -> None:
        self.reports.append(problem)

    async def violate(self, problem: str) -> None:
        self.violations.append(problem)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(talkline.transport.time, "monotonic", fake)
    return fake


@pytest.fixture
def said() -> Said:
    return Said()


def guarded(said: Said, **limits: float) -> GuardedSerializer:
    """A serializer whose session, like a real one, stops accepting input once violated."""
    return GuardedSerializer(
        limits=InputLimits(**limits),  # type: ignore[arg-type]
        report=said.report,
        violate=said.violate,
        accepting=lambda: not said.violations,
    )


async def test_a_message_flood_closes_once_then_nothing_more_is_read(
    clock: Clock, said: Said, logged: list[str]
) -> None:
    serializer = guarded(said, max_messages_per_second=10)
    frames = [await serializer.deserialize(READY) for _ in range(10)]
    assert None not in frames and said.violations == []
    assert await serializer.deserialize(READY) is None
    assert said.violations == ["more than 10 messages per second"]
    assert "closing: more than 10 messages per second" in logged
    clock.advance(60)  # even once the client calms down, the session is over
    assert await serializer.deserialize(READY) is None
    assert said.violations == ["more than 10 messages per second"]


async def test_a_message_over_the_flood_limit_is_not_even_read(clock: Clock, said: Said) -> None:
    """Past the limit the message is dropped unread: no 'bad input' for it."""
    serializer = guarded(said, max_messages_per_second=3)
    for _ in range(4):
        await serializer.deserialize("spam")
    assert serializer.bad_inputs == 3 and len(said.reports) == 3
    assert said.violations == ["more than 3 messages per second"]


async def test_audio_faster_than_real_time_closes_the_session(clock: Clock, said: Said) -> None:
    serializer = guarded(said, audio_burst_secs=0.1)
    frames = [await serializer.deserialize(audio_frame(CHUNK)) for _ in range(4)]
    assert all(isinstance(f, InputAudioRawFrame) for f in frames[:3])
    assert frames[3] is None
    assert said.violations == [
        "audio arrives faster than real time (0.1 s of audio in 0.0 s; at most 1.5x)"
    ]
    assert serializer.audio_in == 4


async def test_real_time_audio_is_counted_and_passed(clock: Clock, said: Said) -> None:
    serializer = guarded(said)
    for _ in range(3):
        assert isinstance(await serializer.deserialize(audio_frame(CHUNK)), InputAudioRawFrame)
        clock.advance(0.032)
    assert await serializer.deserialize(READY) is not None
    assert serializer.audio_in == 3 and said.violations == [] and said.reports == []


async def test_bot_audio_sent_is_counted(said: Said) -> None:
    serializer = guarded(said)
    for _ in range(2):
        await serializer.serialize(OutputAudioRawFrame(bytes(960), 24000, 1))
    assert serializer.audio_out == 2


def padded(size: int) -> bytes:
    """An RTVI message whose wire form is exactly ``size`` bytes."""
    return next(
        wire
        for pad in range(size)
        if len(wire := message_frame(rtvi_message("x", {"pad": "p" * pad}))) == size
    )


async def test_a_message_of_exactly_the_size_limit_is_read(said: Said) -> None:
    limit = 4096
    serializer = guarded(said, max_message_bytes=limit)
    assert await serializer.deserialize(padded(limit)) is not None
    assert await serializer.deserialize(padded(limit + 1)) is None
    assert said.reports == [
        f"Bad input: message of {limit + 1} bytes is over the {limit} byte limit. "
        "The session continues."
    ]


@pytest.mark.parametrize(
    ("wire", "problem"),
    [
        (
            "hello",
            "text WebSocket messages are not accepted: send binary protobuf Frames "
            "(RTVI messages go in Frame.message.data)",
        ),
        (b"\xff\xff\xff\xff", "the message is not a valid protobuf Frame"),
        (b"", "the Frame is empty: expected audio or message"),
        (message_frame({"label": "rtvi-ai", "type": "x"})[:-1], None),
    ],
    ids=["text", "not-protobuf", "empty", "cut-json"],
)
async def test_each_bad_input_is_told_in_its_own_words(
    said: Said, logged: list[str], wire: str | bytes, problem: str | None
) -> None:
    serializer = guarded(said)
    assert await serializer.deserialize(wire) is None
    if problem is not None:
        assert said.reports == [f"Bad input: {problem}. The session continues."]
        assert logged == [f"bad input: {problem}"]
    assert serializer.bad_inputs == 1


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ("not json", "Frame.message.data is not JSON"),
        ("[1, 2]", "an RTVI message must be a JSON object"),
        ('{"type": "x"}', 'an RTVI message needs "label": "rtvi-ai" and a string "type"'),
    ],
)
async def test_each_bad_rtvi_message_is_told_in_its_own_words(
    said: Said, message: str, problem: str
) -> None:
    import pipecat.frames.protobufs.frames_pb2 as frame_protos

    frame = frame_protos.Frame()  # type: ignore[attr-defined]
    frame.message.data = message
    assert await guarded(said).deserialize(bytes(frame.SerializeToString())) is None
    assert said.reports == [f"Bad input: {problem}. The session continues."]


async def test_the_error_echo_limit_resets_each_second(clock: Clock, said: Said) -> None:
    """At most ERRORS_PER_SECOND reports per one-second window; a new window starts at 1 s."""
    serializer = guarded(said)
    for _ in range(ERRORS_PER_SECOND + 3):
        await serializer.deserialize("spam")
    assert len(said.reports) == ERRORS_PER_SECOND
    clock.advance(0.999)
    await serializer.deserialize("spam")
    assert len(said.reports) == ERRORS_PER_SECOND
    clock.advance(0.001)  # exactly one second after the window opened
    for _ in range(ERRORS_PER_SECOND + 1):
        await serializer.deserialize("spam")
    assert len(said.reports) == 2 * ERRORS_PER_SECOND
    assert serializer.bad_inputs == 2 * ERRORS_PER_SECOND + 5
