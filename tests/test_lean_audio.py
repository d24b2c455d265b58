"""LeanUserAggregator: the client's audio skips the aggregator's queue, and nothing else
changes — the same audio reaches the brain in the same order, and the VAD raises the same
speaking events, as through Pipecat's own LLMUserAggregator."""

from __future__ import annotations

import math
import struct

from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMUserAggregator,
    LLMUserAggregatorParams,
)
from pipecat.tests.utils import run_test
from pipecat.turns.user_mute.base_user_mute_strategy import BaseUserMuteStrategy
from pipecat.turns.user_start import VADUserTurnStartStrategy
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from talkline.lean_transport import LeanUserAggregator, lean_aggregator_pair

WINDOW = 512
VAD_EVENTS = (VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame)


class LoudnessVAD(VADAnalyzer):
    """Speech wherever a window is loud: a VAD whose decisions a test can predict."""

    def num_frames_required(self) -> int:
        return WINDOW

    def voice_confidence(self, buffer: bytes) -> float:
        samples = struct.unpack(f"<{len(buffer) // 2}h", buffer)
        return 1.0 if max(abs(s) for s in samples) > 1000 else 0.0


def chunk(loud: bool, index: int) -> InputAudioRawFrame:
    amplitude = 8000 if loud else 0
    samples = [
        int(amplitude * math.sin(2 * math.pi * 220 * (index * WINDOW + i) / 16000))
        for i in range(WINDOW)
    ]
    return InputAudioRawFrame(
        audio=struct.pack(f"<{WINDOW}h", *samples), sample_rate=16000, num_channels=1
    )


def utterances() -> list[Frame]:
    """Two utterances, each between silences long enough for the VAD to stop."""
    plan = [False] * 20 + [True] * 30 + [False] * 25 + [True] * 20 + [False] * 25
    return [chunk(loud, i) for i, loud in enumerate(plan)]


def params() -> LLMUserAggregatorParams:
    """The Gemini brain's: the VAD starts turns, Gemini ends them (no Smart Turn)."""
    return LLMUserAggregatorParams(
        vad_analyzer=LoudnessVAD(params=VADParams(start_secs=0.1, stop_secs=0.3)),
        user_turn_strategies=UserTurnStrategies(
            start=[VADUserTurnStartStrategy()],
            stop=[SpeechTimeoutUserTurnStopStrategy(wait_for_transcript=False)],
        ),
    )


async def through(aggregator: LLMUserAggregator, frames: list[Frame]) -> list[Frame]:
    down, _up = await run_test(aggregator, frames_to_send=frames)
    return list(down)


def audio_of(frames: list[Frame]) -> list[bytes]:
    return [f.audio for f in frames if isinstance(f, InputAudioRawFrame)]


def events_of(frames: list[Frame]) -> list[type]:
    return [type(f) for f in frames if isinstance(f, VAD_EVENTS)]


async def test_the_lean_aggregator_passes_the_same_audio_and_events_as_pipecats() -> None:
    frames = utterances()
    pipecat = await through(LLMUserAggregator(LLMContext(), params=params()), frames)
    lean_aggregator, _assistant = lean_aggregator_pair(LLMContext(), params())
    lean = await through(lean_aggregator, frames)

    assert audio_of(lean) == audio_of(pipecat) == [f.audio for f in frames]  # type: ignore[attr-defined]
    expected = [VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame]
    assert events_of(pipecat) == expected * 2  # the fake VAD is heard as planned
    assert events_of(lean) == events_of(pipecat)
    assert lean_aggregator.lean_frames == len(frames)  # and every chunk took the lean path


class MuteAlways(BaseUserMuteStrategy):
    async def process_frame(self, frame: Frame) -> bool:
        await super().process_frame(frame)
        return True


async def test_muted_audio_is_dropped_on_the_lean_path_as_on_pipecats() -> None:
    def muted() -> LLMUserAggregatorParams:
        muting = params()
        muting.user_mute_strategies = [MuteAlways()]
        return muting

    frames = utterances()
    pipecat = await through(LLMUserAggregator(LLMContext(), params=muted()), frames)
    lean_aggregator = LeanUserAggregator(LLMContext(), params=muted())
    lean = await through(lean_aggregator, frames)
    assert len(audio_of(pipecat)) < len(frames)  # muting took effect
    assert audio_of(lean) == audio_of(pipecat)
    assert lean_aggregator.lean_frames == len(frames)


def test_the_pair_wires_the_assistant_to_its_user_half() -> None:
    user, assistant = lean_aggregator_pair(LLMContext(), params())
    assert assistant._paired_user_aggregator is user
