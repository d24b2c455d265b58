"""Where the offline recognizers cut a segment when the VAD after them is behind
(services/shared_stt.py): at the VAD's place in the audio, not at the recognizer's."""

from __future__ import annotations

import numpy as np
from pipecat.frames.frames import (
    InputAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import STTSettings

from talkline.services.shared_stt import SharedModelSTT

RATE = 16000
CHUNK = 512  # samples: 32 ms, as the page sends
CHUNK_BYTES = CHUNK * 2


class Position:
    analyzed_bytes = 0


def chunk(number: int) -> bytes:
    """32 ms whose every sample is ``number``: a segment shows which chunks it holds."""
    return np.full(CHUNK, number, dtype=np.int16).tobytes()


def chunks_in(pcm: bytes) -> list[int]:
    samples = np.frombuffer(pcm, dtype=np.int16)
    return [int(samples[i]) for i in range(0, samples.size, CHUNK) if samples[i]]


async def segment_of(stt: SharedModelSTT) -> bytes:
    return stt._segment_queue.get_nowait() or b""


class RawSegments(SharedModelSTT):
    @property
    def wants_wav_segments(self) -> bool:
        return False  # raw PCM, as Moonshine and Whisper take it


def recognizer() -> tuple[SharedModelSTT, Position]:
    stt = RawSegments(sample_rate=RATE, trailing_silence_secs=0.0, settings=STTSettings())
    stt._audio_buffer_size_1s = RATE * 2  # what setup() sets from the sample rate
    stt._sample_rate = RATE
    position = Position()
    stt.follow(position)
    return stt, position


async def feed(stt: SharedModelSTT, numbers: range) -> None:
    for number in numbers:
        await stt.process_audio_frame(
            InputAudioRawFrame(chunk(number), RATE, 1), FrameDirection.DOWNSTREAM
        )


async def test_audio_the_vad_has_not_heard_is_kept_and_the_cut_is_at_its_place() -> None:
    stt, vad = recognizer()
    vad.analyzed_bytes = 10 * CHUNK_BYTES
    await feed(stt, range(1, 101))  # 100 chunks arrive at once; the VAD has heard 10
    assert chunks_in(bytes(stt._audio_buffer)) == list(range(1, 101))

    await stt._handle_user_started_speaking(VADUserStartedSpeakingFrame())
    vad.analyzed_bytes = 80 * CHUNK_BYTES  # it decided "stopped" at chunk 80
    await stt._handle_user_stopped_speaking(VADUserStoppedSpeakingFrame())

    assert chunks_in(await segment_of(stt)) == list(range(1, 81))
    assert chunks_in(bytes(stt._audio_buffer)) == list(range(81, 101))  # for the next one


async def test_heard_audio_is_kept_for_a_second_before_speech() -> None:
    stt, vad = recognizer()
    vad.analyzed_bytes = 90 * CHUNK_BYTES
    await feed(stt, range(1, 101))
    kept = chunks_in(bytes(stt._audio_buffer))
    # a second (31.25 chunks) before where the VAD is, and all it has not heard
    assert kept[0] == 90 - 31 and kept[-1] == 100, kept


async def test_a_vad_that_never_catches_up_does_not_keep_everything() -> None:
    stt, _vad = recognizer()
    await feed(stt, range(1, 2001))  # 64 s the VAD never heard
    assert len(stt._audio_buffer) <= 30 * RATE * 2
