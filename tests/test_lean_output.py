"""The lean output transport: bot audio goes out from the media sender's audio task itself.

Pipecat's media sender took each queued frame, and wrote each chunk, through
``asyncio.wait_for``, which on Python 3.11 makes a task per call: every frame waited behind
every other ready task before it moved. These tests run the output transport in a Pipecat
pipeline against a stand-in WebSocket and look at which task did what (no timing).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pipecat.frames.protobufs.frames_pb2 as frame_protos
from pipecat.frames.frames import (
    Frame,
    InterruptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.worker import PipelineParams
from pipecat.serializers.protobuf import ProtobufFrameSerializer
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams
from starlette.websockets import WebSocketState

from talkline.lean_transport import LeanMediaSender, LeanWebsocketTransport

RATE = 24000
CHUNK = RATE * 2 * 40 // 1000  # Pipecat's default: 40 ms chunks


class Socket:
    """A connected FastAPI WebSocket stand-in that records each write and its task."""

    def __init__(self) -> None:
        self.client_state = WebSocketState.CONNECTED
        self.application_state = WebSocketState.CONNECTED
        self.headers: dict[str, str] = {}
        self.writes: list[tuple[asyncio.Task[Any] | None, bytes]] = []

    async def send_bytes(self, data: bytes) -> None:
        self.writes.append((asyncio.current_task(), data))

    async def send_text(self, data: str) -> None:
        raise AssertionError("the protobuf serializer writes bytes")

    async def close(self, *_args: Any, **_kwargs: Any) -> None:
        self.client_state = WebSocketState.DISCONNECTED

    def audio_writes(self) -> list[tuple[asyncio.Task[Any] | None, bytes]]:
        found = []
        for task, data in self.writes:
            proto = frame_protos.Frame.FromString(data)  # type: ignore[attr-defined]
            if proto.WhichOneof("frame") == "audio":
                found.append((task, proto.audio.audio))
        return found


class Tasks:
    """Every task created while installed, with the task that was running when it was made."""

    def __init__(self) -> None:
        self.made: list[tuple[asyncio.Task[Any] | None, asyncio.Task[Any]]] = []

    def __call__(self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, **kwargs)
        self.made.append((asyncio.current_task(loop), task))
        return task

    def audio_task(self) -> asyncio.Task[Any]:
        (task,) = [t for _, t in self.made if t.get_name().endswith("::_audio_task_handler")]
        return task

    def made_by(self, parent: asyncio.Task[Any]) -> list[asyncio.Task[Any]]:
        return [task for maker, task in self.made if maker is parent]


async def play(frames: list[Frame]) -> tuple[Socket, Tasks]:
    socket = Socket()
    transport = LeanWebsocketTransport(
        socket,
        FastAPIWebsocketParams(audio_out_enabled=True, serializer=ProtobufFrameSerializer()),
    )
    tasks = Tasks()
    loop = asyncio.get_running_loop()
    loop.set_task_factory(tasks)
    try:
        await run_test(
            transport.output(),
            frames_to_send=frames,
            pipeline_params=PipelineParams(audio_out_sample_rate=RATE),
        )
    finally:
        loop.set_task_factory(None)
    return socket, tasks


def reply(chunks: int) -> list[Frame]:
    audio = (bytes(range(256)) * (chunks * CHUNK // 256 + 1))[: chunks * CHUNK]
    return [
        TTSStartedFrame(),
        TTSAudioRawFrame(audio=audio, sample_rate=RATE, num_channels=1),
        TTSStoppedFrame(),
    ]


async def test_the_media_senders_are_lean() -> None:
    socket = Socket()
    transport = LeanWebsocketTransport(
        socket,
        FastAPIWebsocketParams(audio_out_enabled=True, serializer=ProtobufFrameSerializer()),
    )
    senders: list[Any] = []
    output = transport.output()

    async def note(*_args: Any) -> None:
        senders.extend(output._media_senders.values())

    output.add_event_handler("on_after_process_frame", note)
    await run_test(output, frames_to_send=[], pipeline_params=PipelineParams())
    assert senders and all(type(sender) is LeanMediaSender for sender in senders)


async def test_every_chunk_is_written_by_the_audio_task_in_order() -> None:
    """The whole reply, in 40 ms chunks and in order, each written by the audio task
    (then Pipecat's closing silence, by the same task)."""
    frames = reply(5)
    socket, tasks = await play(frames)
    writes = socket.audio_writes()
    spoken = writes[:5]
    assert b"".join(audio for _, audio in spoken) == frames[1].audio  # type: ignore[attr-defined]
    assert [len(audio) for _, audio in spoken] == [CHUNK] * 5
    assert not any(audio for _, chunk in writes[5:] for audio in chunk)
    assert {task for task, _ in writes} == {tasks.audio_task()}


async def test_the_audio_task_makes_no_task_per_frame() -> None:
    """Taking a frame from the queue and writing it happen in the audio task itself."""
    _socket, tasks = await play(reply(5))
    assert tasks.made_by(tasks.audio_task()) == []


async def test_an_interruption_still_stops_the_audio() -> None:
    """Audio queued when an interruption comes is dropped, not played."""
    long = reply(100)  # 4 s, written at twice real time: still playing when interrupted
    socket, _tasks = await play([*long[:2], SleepFrame(0.1), InterruptionFrame()])
    assert 0 < len(socket.audio_writes()) < 100
