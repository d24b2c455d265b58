"""Energy-based end-of-turn detection for user audio and a synthetic reply voice."""

from __future__ import annotations

import enum
import math
from array import array
from functools import lru_cache

import numpy as np

FRAME_SECONDS = 0.02


class Activity(enum.Enum):
    """What the detector saw happen in the audio it was fed."""

    SPEECH_STARTED = "speech_started"
    SPEECH_ENDED = "speech_ended"


class EnergyDetector:
    """Marks speech by RMS level: starts after `start_ms` voiced, ends after `silence_ms` quiet."""

    def __init__(
        self,
        *,
        rate: int = 16000,
        threshold: float = 500.0,
        start_ms: float = 100.0,
        silence_ms: float = 500.0,
    ) -> None:
        self.rate = rate
        self.threshold = threshold
        self.start_ms = start_ms
        self.silence_ms = silence_ms
        self.speaking = False
        self._pending = b""
        self._voiced_ms = 0.0
        self._quiet_ms = 0.0

    def feed(self, pcm: bytes) -> list[Activity]:
        """Consume 16-bit mono PCM and report speech starts and ends, in order."""
        frame_bytes = 2 * max(1, int(self.rate * FRAME_SECONDS))
        data = self._pending + pcm
        whole = len(data) - len(data) % frame_bytes
        self._pending = data[whole:]
        events: list[Activity] = []
        for voiced in self._voiced(data[:whole], frame_bytes // 2):
            event = self._frame(voiced)
            if event is not None:
                events.append(event)
        return events

    def _voiced(self, pcm: bytes, frame_samples: int) -> list[bool]:
        """Whether each whole frame's RMS reaches the threshold, all frames in one pass."""
        if not pcm:
            return []
        frames = np.frombuffer(pcm, dtype=np.int16).astype(np.float32).reshape(-1, frame_samples)
        mean_square = np.einsum("ij,ij->i", frames, frames) / frame_samples
        return (mean_square >= self.threshold**2).tolist()

    def reset(self) -> None:
        """Forget any speech in progress."""
        self.speaking = False
        self._voiced_ms = self._quiet_ms = 0.0

    def _frame(self, voiced: bool) -> Activity | None:
        step = FRAME_SECONDS * 1000
        self._voiced_ms = self._voiced_ms + step if voiced else 0.0
        self._quiet_ms = 0.0 if voiced else self._quiet_ms + step
        if not self.speaking and self._voiced_ms >= self.start_ms:
            self.speaking = True
            return Activity.SPEECH_STARTED
        if self.speaking and self._quiet_ms >= self.silence_ms:
            self.speaking = False
            return Activity.SPEECH_ENDED
        return None


@lru_cache(maxsize=16)
def reply_voice(seconds: float, rate: int = 24000) -> bytes:
    """A 330 Hz tone, amplitude-modulated at 3 Hz like syllables, as 16-bit PCM."""
    count = int(seconds * rate)
    samples = array("h", bytes(2 * count))
    for i in range(count):
        t = i / rate
        envelope = 0.55 + 0.45 * math.sin(2 * math.pi * 3 * t)
        samples[i] = int(7000 * envelope * math.sin(2 * math.pi * 330 * t))
    return samples.tobytes()


def chunks(pcm: bytes, size: int) -> list[bytes]:
    """Split audio into pieces of at most `size` bytes, whole samples each."""
    size -= size % 2
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]
