"""Client audio in whatever format the device captures, converted to the pipeline's format.

Browsers and phones record at 44.1 or 48 kHz, often in stereo; telephony bridges send 8 kHz.
The pipeline (VAD, turn detection, Whisper, Gemini's upstream) runs at one rate in mono, so
each session has one ``AudioConverter``: it averages the channels into mono, then resamples
with a soxr stream resampler that keeps the filter's history between chunks, so there is no
click or drift at chunk boundaries.

soxr works in blocks, so the resampler holds back some audio that comes out with a later
chunk: with the "LQ" preset and 32 ms chunks, 11 ms on average (at most 22 ms) from 44.1 or
48 kHz, 32 ms on average (at most 61 ms) from 8 kHz. "MQ" and "HQ" hold twice that, for no
gain a speech recogniser can use: "LQ" keeps 16-bit precision, passes speech up to 5 kHz
untouched, is -3 dB at 6.5 kHz, and stops what would alias (9 kHz and up, from 48 kHz) by
over 100 dB. A microphone keeps streaming, so held audio does not wait for long; when the
client changes rate, what the old resampler holds is flushed before the new one starts, so
no audio is lost. Audio already at the pipeline's rate and mono passes through untouched.

``soxr.ResampleStream`` is used directly, not Pipecat's ``SOXRStreamAudioResampler``: that one
discards what it holds after 0.2 s without audio by the wall clock (a network hiccup would cut
speech), raises on a rate change instead of flushing, and takes int16 only (the down-mix
would be rounded twice).
"""

from __future__ import annotations

import numpy as np
import soxr

QUALITY = "LQ"  # 16-bit precision, passband to 5 kHz: the least delay with a real filter
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
