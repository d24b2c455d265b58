"""Test audio for the emulator and the fakes: 16 kHz mono 16-bit PCM."""

from __future__ import annotations

import math
import struct

IN_RATE = 16000


def tone(seconds: float, freq: float = 300.0, amplitude: int = 8000) -> bytes:
    """A sine tone."""
    count = int(seconds * IN_RATE)
    samples = (int(amplitude * math.sin(2 * math.pi * freq * i / IN_RATE)) for i in range(count))
    return struct.pack(f"<{count}h", *samples)


def silence(seconds: float) -> bytes:
    """Digital silence."""
    return bytes(2 * int(seconds * IN_RATE))
