"""Where the offline recognizers cut a segment when the VAD after them is behind
(services/shared_stt.py): at the VAD's place in the audio, not at the recognizer's."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
from pipecat.audio.vad.vad_analyzer import VADState
from pipecat.frames.frames import (
    InputAudioRawFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import STTSettings
from pipecat.utils.asyncio.task_manager import TaskManager

from talkline.services.shared_stt import SharedModelSTT

RATE = 16000
CHUNK = 512  # samples: 32 ms, as the page sends
CHUNK_BYTES = CHUNK * 2


class Position:
    analyzed_bytes = 0
    state = VADState.QUIET
    speech_runs = 0


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


class Transcribing(RawSegments):
    """Transcribes a segment as the numbers of the chunks it holds, and counts the runs."""

    def __init__(self) -> None:
        super().__init__(sample_rate=RATE, trailing_silence_secs=0.0, settings=STTSettings())
        self._shared = SimpleNamespace(slots=asyncio.Semaphore(2))
        self.runs: list[list[int]] = []
        self.lengths: list[int] = []  # bytes of each run's audio
        self.failures = 0  # runs to fail, from the next one

    def transcribe(self, audio: bytes) -> str:
        self.runs.append(chunks_in(audio))
        self.lengths.append(len(audio))
        if self.failures:
            self.failures -= 1
            raise RuntimeError("the model failed")
        return " ".join(str(number) for number in self.runs[-1])


async def early_recognizer(
    early_secs: float, stop_secs: float = 0.0
) -> tuple[Transcribing, Position]:
    stt = Transcribing()
    position = Position()
    stt.follow(
        position, early_secs=early_secs, stop_secs=stop_secs
    )  # as the pipeline's builder: before setup
    stt._audio_buffer_size_1s = RATE * 2  # what setup() sets from the sample rate
    stt._sample_rate = RATE
    stt._task_manager = TaskManager()
    return stt, position


async def heard(stt: SharedModelSTT, vad: Position, numbers: range, state: VADState) -> None:
    """Chunks the VAD hears as they come, in ``state``."""
    for number in numbers:
        vad.analyzed_bytes += CHUNK_BYTES
        vad.speech_runs += state == VADState.SPEAKING and vad.state != VADState.SPEAKING
        vad.state = state
        await feed(stt, range(number, number + 1))


async def words_of_segment(stt: Transcribing, vad: Position) -> str:
    """The VAD reports the stop; the segment's transcript, as the service gives it."""
    await stt._handle_user_stopped_speaking(VADUserStoppedSpeakingFrame())
    said = [frame async for frame in stt.run_stt(await segment_of(stt))]
    assert len(said) == 1 and isinstance(said[0], TranscriptionFrame), said
    return said[0].text


async def test_silence_after_speech_starts_the_transcript_before_the_vad_stops() -> None:
    """Two chunks (64 ms, at least the 0.06 s asked for) after the VAD is first heard
    STOPPING, the segment is transcribed; at the VAD's stop that transcript is the
    segment's: one run, and the silence after it is not heard again."""
    stt, vad = await early_recognizer(early_secs=0.06)
    await stt._handle_user_started_speaking(VADUserStartedSpeakingFrame())
    await heard(stt, vad, range(1, 31), VADState.SPEAKING)
    await heard(stt, vad, range(31, 35), VADState.STOPPING)
    await asyncio.sleep(0.05)
    assert stt.runs == [list(range(1, 34))]  # started before the stop
    await heard(stt, vad, range(35, 38), VADState.STOPPING)
    assert await words_of_segment(stt, vad) == " ".join(str(n) for n in range(1, 34))
    assert len(stt.runs) == 1


async def test_speech_heard_again_throws_the_early_transcript_away() -> None:
    """The user goes on after a short pause: the segment that ends later is transcribed
    whole, and the early transcript of its first part is not what the user is told."""
    stt, vad = await early_recognizer(early_secs=0.06)
    await stt._handle_user_started_speaking(VADUserStartedSpeakingFrame())
    await heard(stt, vad, range(1, 31), VADState.SPEAKING)
    await heard(stt, vad, range(31, 35), VADState.STOPPING)
    await asyncio.sleep(0.05)
    await heard(stt, vad, range(35, 51), VADState.SPEAKING)
    await heard(stt, vad, range(51, 53), VADState.STOPPING)
    assert await words_of_segment(stt, vad) == " ".join(str(n) for n in range(1, 53))
    assert stt.runs == [list(range(1, 34)), list(range(1, 53))]


async def test_with_early_transcripts_off_a_segment_is_transcribed_at_the_stop() -> None:
    stt, vad = await early_recognizer(early_secs=0.0)
    await stt._handle_user_started_speaking(VADUserStartedSpeakingFrame())
    await heard(stt, vad, range(1, 31), VADState.SPEAKING)
    await heard(stt, vad, range(31, 41), VADState.STOPPING)
    await asyncio.sleep(0.05)
    assert stt.runs == []
    assert await words_of_segment(stt, vad) == " ".join(str(n) for n in range(1, 41))


async def test_an_early_transcript_serves_only_the_segment_it_was_made_of() -> None:
    """Two segments wait to be transcribed, each with its early transcript: each gets its
    own words with no second run; a segment that was never transcribed (its queue entry
    lost) leaves its early transcript behind, and the next one does not take it."""
    stt, vad = await early_recognizer(early_secs=0.06)
    segments = []
    for first, last in ((1, 31), (101, 131), (201, 231)):
        await stt._handle_user_started_speaking(VADUserStartedSpeakingFrame())
        await heard(stt, vad, range(first, last), VADState.SPEAKING)
        await heard(stt, vad, range(last, last + 8), VADState.STOPPING)
        await stt._handle_user_stopped_speaking(VADUserStoppedSpeakingFrame())
        segments.append(await segment_of(stt))
        vad.state = VADState.QUIET
    await asyncio.sleep(0.05)
    for segment, first in ((segments[1], 101), (segments[2], 201)):  # the first one is lost
        said = [frame async for frame in stt.run_stt(segment)]
        assert isinstance(said[0], TranscriptionFrame)
        assert said[0].text.split()[:2] == [str(first), str(first + 1)], said[0].text
    assert len(stt.runs) == 3 and stt._claimed == []  # the three early runs, no other


async def test_speech_the_recognizer_did_not_see_in_time_makes_the_early_transcript_stale() -> None:
    """A burst: the early transcript has started on what the VAD had heard (chunks 1-33, not
    the 41 received), then the VAD hears the rest as speech and stops, the recognizer seeing
    none of it: the early transcript is stale, the segment is transcribed whole."""
    stt, vad = await early_recognizer(early_secs=0.06)
    await stt._handle_user_started_speaking(VADUserStartedSpeakingFrame())
    await heard(stt, vad, range(1, 31), VADState.SPEAKING)
    await heard(stt, vad, range(31, 33), VADState.STOPPING)
    await feed(stt, range(33, 41))  # arrived; the VAD has not heard them
    vad.analyzed_bytes += CHUNK_BYTES  # it hears chunk 33, still quiet
    await feed(stt, range(41, 42))
    await asyncio.sleep(0.05)
    assert stt.runs == [list(range(1, 34))]  # only what the VAD had heard
    vad.speech_runs += 1  # 34-41 were speech; then it stopped
    vad.analyzed_bytes = 41 * CHUNK_BYTES
    vad.state = VADState.QUIET
    assert await words_of_segment(stt, vad) == " ".join(str(n) for n in range(1, 42))


async def test_an_early_segment_ends_in_as_much_quiet_as_the_stops_would() -> None:
    """Cut 2 chunks into the quiet, the early segment is padded with silence to the VAD's
    0.2 s stop: Moonshine reads a sentence that ends soon after its last word as going on."""
    stt, vad = await early_recognizer(early_secs=0.06, stop_secs=0.2)
    await stt._handle_user_started_speaking(VADUserStartedSpeakingFrame())
    await heard(stt, vad, range(1, 31), VADState.SPEAKING)
    await heard(stt, vad, range(31, 35), VADState.STOPPING)
    await asyncio.sleep(0.05)
    quiet_after = 2 * CHUNK_BYTES  # heard since the VAD was first seen STOPPING
    assert stt.lengths == [33 * CHUNK_BYTES + int(0.2 * RATE) * 2 - quiet_after]


async def test_an_early_transcript_that_failed_is_made_again_at_the_stop() -> None:
    """The model fails on the early run only: the segment is transcribed at the stop, and
    the user gets the words, not an error."""
    stt, vad = await early_recognizer(early_secs=0.06)
    stt.failures = 1
    await stt._handle_user_started_speaking(VADUserStartedSpeakingFrame())
    await heard(stt, vad, range(1, 31), VADState.SPEAKING)
    await heard(stt, vad, range(31, 35), VADState.STOPPING)
    await asyncio.sleep(0.05)
    assert await words_of_segment(stt, vad) == " ".join(str(n) for n in range(1, 35))
    assert len(stt.runs) == 2


async def test_a_dropped_early_transcript_waiting_for_a_slot_is_stopped() -> None:
    """Every model slot is busy: the early transcript waits; the user goes on and it is
    dropped, and its task ends instead of taking a slot later for nothing."""
    stt, vad = await early_recognizer(early_secs=0.06)
    stt._shared = SimpleNamespace(slots=asyncio.Semaphore(0))
    await stt._handle_user_started_speaking(VADUserStartedSpeakingFrame())
    await heard(stt, vad, range(1, 31), VADState.SPEAKING)
    await heard(stt, vad, range(31, 35), VADState.STOPPING)
    assert [t.get_name() for t in stt.task_manager.current_tasks() if "::early" in t.get_name()]
    await heard(stt, vad, range(35, 40), VADState.SPEAKING)
    await asyncio.sleep(0.01)
    assert [t for t in stt.task_manager.current_tasks() if "::early" in t.get_name()] == []
    assert stt.runs == []
