"""Client audio in whatever format the device captures, converted to the pipeline's format.

Browsers and phones record at 44.1 or 48 kHz, often in stereo; telephony bridges send 8 kHz.
The pipeline (VAD, turn detection, Whisper, Gemini's upstream) runs at one rate in mono, so
each session has one ``AudioConverter``: it averages the channels into mono, then resamples
with a soxr stream resampler that keeps the filter's history between chunks, so there is no
click or drift at chunk boundaries.

The resampler holds back a few milliseconds of audio (about 15-30 ms with the "MQ" preset)
that come out with the next chunk. A microphone keeps streaming, so nothing waits for long;
when the client changes rate, what the old resampler holds is flushed before the new one
starts, so no audio is lost. Audio already at the pipeline's rate and mono passes through
untouched.
"""

from __future__ import annotations

import numpy as np
import soxr

QUALITY = "MQ"  # 16-bit precision (what int16 input carries), a short filter, low delay
EMPTY = np.zeros(0, dtype=np.float32)


def downmix(pcm: bytes, channels: int) -> np.ndarray:
    """Interleaved 16-bit PCM of ``channels`` channels as mono float32: their average."""
    samples = np.frombuffer(pcm, dtype=np.int16)
    mixed = samples[0::channels].astype(np.float32)
    for channel in range(1, channels):  # strided sums: several times faster than mean(axis=1)
        mixed += samples[channel::channels]
    if channels > 1:
        mixed /= channels
    return mixed


def to_pcm16(samples: np.ndarray) -> bytes:
    return bytes(np.clip(np.rint(samples), -32768, 32767).astype(np.int16).tobytes())


class AudioConverter:
    """One session's conversion of client audio to ``rate`` Hz mono 16-bit PCM."""

    def __init__(self, rate: int, *, quality: str = QUALITY):
        self.rate = rate
        self._quality = quality
        self._stream: soxr.ResampleStream | None = None
        self._stream_rate: int | None = None

    def convert(self, pcm: bytes, rate: int, channels: int) -> bytes:
        """``pcm`` (whole samples of ``channels`` channels at ``rate`` Hz) at the pipeline's
        rate, in mono; may be empty while the resampler fills its filter."""
        if rate == self.rate and channels == 1 and self._stream is None:
            return pcm  # the fast path: nothing to do
        held = self._switch_to(rate)
        mono = downmix(pcm, channels)
        if self._stream is not None:
            mono = self._stream.resample_chunk(mono)
        if held.size:
            mono = np.concatenate([held, mono])
        return to_pcm16(mono)

    def _switch_to(self, rate: int) -> np.ndarray:
        """Make the resampler fit ``rate``; returns what the previous one still held."""
        if rate == self._stream_rate:
            return EMPTY
        held = self.flush()
        if rate != self.rate:
            self._stream = soxr.ResampleStream(
                rate, self.rate, 1, dtype="float32", quality=self._quality
            )
            self._stream_rate = rate
        return held

    def flush(self) -> np.ndarray:
        """End the current resampler's stream: the samples it still held, at the pipeline rate."""
        if self._stream is None:
            return EMPTY
        held = self._stream.resample_chunk(EMPTY, last=True)
        self._stream, self._stream_rate = None, None
        return np.asarray(held, dtype=np.float32)
