"""Client audio conversion: the stream resampler, the down-mix, and limits in seconds."""

from __future__ import annotations

import numpy as np
import pytest
import soxr
from pipecat.frames.frames import InputAudioRawFrame

from talkline.audio_in import QUALITY, AudioConverter, downmix
from talkline.client import audio_frame
from talkline.transport import GuardedSerializer, InputLimits, RateGuard


def tones(rate: int, seconds: float = 1.0) -> np.ndarray:
    """Speech-band tones with a little noise, as int16 at ``rate`` Hz."""
    t = np.arange(int(rate * seconds)) / rate
    mixed = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 700.0, 1900.0, 3100.0))
    noise = np.random.default_rng(7).normal(0, 0.05, t.size)
    return np.asarray((mixed / 4 + noise) * 12000, dtype=np.int16)


def converted_in_chunks(
    converter: AudioConverter, pcm: bytes, rate: int, channels: int, chunk_secs: float = 0.02
) -> bytes:
    step = int(rate * chunk_secs) * 2 * channels
    pieces = [
        converter.convert(pcm[i : i + step], rate, channels) for i in range(0, len(pcm), step)
    ]
    return b"".join(pieces)


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000])
def test_a_stream_resampled_in_20ms_chunks_matches_it_resampled_whole(rate: int) -> None:
    """Chunk by chunk, the converter's output is the whole signal resampled at once."""
    signal = tones(rate)
    converter = AudioConverter(16000)
    chunked = converted_in_chunks(converter, signal.tobytes(), rate, 1)
    chunked += converter.flush().astype(np.int16).tobytes()
    whole = soxr.resample(signal.astype(np.float32), rate, 16000, quality=QUALITY)
    got = np.frombuffer(chunked, dtype=np.int16).astype(np.float32)
    assert abs(len(got) - len(whole)) <= 1, (len(got), len(whole))
    n = min(len(got), len(whole))
    error = np.abs(got[:n] - whole[:n])
    assert error.max() <= 2.0, error.max()  # int16 rounding only


def test_the_resampler_holds_back_only_a_few_milliseconds() -> None:
    """After 1 s of 48 kHz audio in 20 ms chunks, at most 25 ms is still in the filter."""
    converter = AudioConverter(16000)
    out = converted_in_chunks(converter, tones(48000).tobytes(), 48000, 1)
    assert 16000 - len(out) // 2 <= 0.025 * 16000


def test_downmix_averages_the_channels() -> None:
    left = np.array([1000, -2000, 300, 32767], dtype=np.int16)
    right = np.array([3000, 2000, -301, 32767], dtype=np.int16)
    stereo = np.stack([left, right], axis=1).reshape(-1)
    assert downmix(stereo.tobytes(), 2).tolist() == [2000.0, 0.0, -0.5, 32767.0]
    three = np.array([3, 6, 9, -3, 0, 3], dtype=np.int16)
    assert downmix(three.tobytes(), 3).tolist() == [6.0, 0.0]


def test_16k_mono_passes_through_untouched() -> None:
    """The fast path returns the very bytes it was given."""
    pcm = tones(16000, 0.032).tobytes()
    assert AudioConverter(16000).convert(pcm, 16000, 1) is pcm


def test_stereo_at_the_pipeline_rate_is_only_down_mixed() -> None:
    mono = tones(16000, 0.032)
    stereo = np.repeat(mono[:, None], 2, axis=1).tobytes()
    assert AudioConverter(16000).convert(stereo, 16000, 2) == mono.tobytes()


def test_a_rate_change_mid_stream_loses_no_audio() -> None:
    """1 s at 48 kHz stereo, then 0.5 s at 16 kHz mono: 1.5 s comes out, none of it held."""
    converter = AudioConverter(16000)
    stereo = np.repeat(tones(48000)[:, None], 2, axis=1).tobytes()
    first = converted_in_chunks(converter, stereo, 48000, 2)
    second = converted_in_chunks(converter, tones(16000, 0.5).tobytes(), 16000, 1)
    assert abs((len(first) + len(second)) // 2 - 24000) <= 2
    then = converted_in_chunks(converter, tones(44100, 0.5).tobytes(), 44100, 1)
    assert len(then) // 2 <= 8000


def test_rate_guard_counts_seconds_in_the_frames_own_format() -> None:
    """2 s of 48 kHz stereo sent at once is within a 3 s burst; 4 s of it is not."""
    second_48k_stereo = 48000 * 2 * 2
    guard = RateGuard(InputLimits(max_audio_rate=1.5, audio_burst_secs=3.0))
    assert guard.audio(2 * second_48k_stereo, 48000, 2) is None
    problem = guard.audio(2 * second_48k_stereo, 48000, 2)
    assert problem is not None and "4.0 s of audio" in problem


async def test_the_serializer_hands_the_pipeline_16k_mono() -> None:
    """48 kHz stereo frames come out as 16 kHz mono frames of the same duration."""

    async def ignore(problem: str) -> None:
        raise AssertionError(problem)

    serializer = GuardedSerializer(limits=InputLimits(), report=ignore, violate=ignore)
    chunk = np.repeat(tones(48000, 0.02)[:, None], 2, axis=1).tobytes()
    frames = [await serializer.deserialize(audio_frame(chunk, 48000, 2)) for _ in range(50)]
    audio = [f for f in frames if isinstance(f, InputAudioRawFrame)]
    assert len(audio) == len([f for f in frames if f is not None])
    assert {(f.sample_rate, f.num_channels) for f in audio} == {(16000, 1)}
    samples = sum(len(f.audio) for f in audio) // 2
    assert 16000 - 0.04 * 16000 <= samples <= 16000
