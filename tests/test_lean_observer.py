"""LeanWorkerObserver: audio frames reach no observer that ignores them; the rest all do."""

from __future__ import annotations

import asyncio

from pipecat.frames.frames import BotStartedSpeakingFrame, InputAudioRawFrame
from pipecat.observers.base_observer import FramePushed
from pipecat.processors.frameworks.rtvi import RTVIObserver, RTVIObserverParams
from pipecat.utils.asyncio.task_manager import TaskManager

from talkline.observer import LeanWorkerObserver, SessionObserver
from tests.support import pushed


class Spy(SessionObserver):
    """talkline's observer, keeping every frame it is handed."""

    def __init__(self) -> None:
        super().__init__(vad_stop_secs=0.2)
        self.seen: list[object] = []

    async def on_push_frame(self, data: FramePushed) -> None:
        self.seen.append(data.frame)
        await super().on_push_frame(data)


async def frames_seen(*others: RTVIObserver) -> list[object]:
    spy = Spy()
    lean = LeanWorkerObserver(observers=[spy, *others])
    await lean.setup(TaskManager())
    try:
        audio = InputAudioRawFrame(audio=b"\0\0" * 512, sample_rate=16000, num_channels=1)
        await lean.on_push_frame(pushed(audio))
        await lean.on_push_frame(pushed(BotStartedSpeakingFrame()))
        for _ in range(20):  # let the observers' queues drain
            await asyncio.sleep(0)
        return [type(frame) for frame in spy.seen]
    finally:
        await lean.cleanup()


async def test_audio_reaches_no_observer_when_none_reads_it() -> None:
    assert await frames_seen(RTVIObserver()) == [BotStartedSpeakingFrame]


async def test_audio_reaches_every_observer_once_one_reads_it() -> None:
    levels = RTVIObserver(params=RTVIObserverParams(user_audio_level_enabled=True))
    assert await frames_seen(levels) == [InputAudioRawFrame, BotStartedSpeakingFrame]
