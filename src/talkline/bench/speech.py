"""What each simulated user says: real speech (made with Piper, or recordings of people), cut
into tagged 32 ms chunks.

Every chunk a client sends carries a tag in its first nine samples (a magic quartet, then
the client's number and the chunk's sequence number as base-``TAG_BASE`` digits). The bench's
emulator finds the tags in the audio the server forwards, so it knows which client a
connection serves and when each chunk arrived, however the server re-chunks the audio.

Every tag sample stays below ``TAG_PEAK``, under the level at which the server's speech gate
sends a window to Silero (`SILENCE_PEAK`, about -44 dBFS): a tagged silent chunk costs the
server what a real microphone's quiet costs it, not a model call (an earlier tag of ±677 did).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace

from talkline.audio import RATE, as_format, rms, silence
from talkline.client import CHUNK_SAMPLES, VOICED_RMS

CHUNK_BYTES = CHUNK_SAMPLES * 2
CHUNK_SECS = CHUNK_SAMPLES / RATE
TAG_PEAK = 150  # every tag sample is quieter than this
TAG_BASE = TAG_PEAK - 1  # digits 0..148
TAG_MAGIC = struct.pack("<4h", 149, -149, 137, -137)
TAG_DIGITS = (2, 3)  # the client's number, the chunk's sequence number
TAG_BYTES = len(TAG_MAGIC) + 2 * sum(TAG_DIGITS)
DEFAULT_TEXT = "Could you tell me what the weather will be like in Paris tomorrow afternoon?"


def split(pcm: bytes) -> list[bytes]:
    """Whole 32 ms chunks; the last one is padded with silence."""
    pcm += bytes(-len(pcm) % CHUNK_BYTES)
    return [pcm[i : i + CHUNK_BYTES] for i in range(0, len(pcm), CHUNK_BYTES)]


def _digits(value: int, count: int) -> list[int]:
    if not 0 <= value < TAG_BASE**count:
        raise ValueError(f"{value} does not fit a tag's {count} digits")
    return [value // TAG_BASE**i % TAG_BASE for i in reversed(range(count))]


def _number(digits: tuple[int, ...]) -> int:
    value = 0
    for digit in digits:
        value = value * TAG_BASE + digit
    return value


def tag(chunk: bytes, client: int, seq: int) -> bytes:
    """``chunk`` with its first samples replaced by the client's and the chunk's number."""
    clients, seqs = TAG_DIGITS
    digits = _digits(client, clients) + _digits(seq, seqs)
    return TAG_MAGIC + struct.pack(f"<{len(digits)}h", *digits) + chunk[TAG_BYTES:]


def find_tags(pcm: bytes) -> list[tuple[int, int]]:
    """Every (client, seq) tag in ``pcm``, in order."""
    found = []
    at = pcm.find(TAG_MAGIC)
    while at >= 0 and at + TAG_BYTES <= len(pcm):
        if at % 2 == 0:
            clients, seqs = TAG_DIGITS
            digits = struct.unpack_from(f"<{clients + seqs}h", pcm, at + len(TAG_MAGIC))
            found.append((_number(digits[:clients]), _number(digits[clients:])))
        at = pcm.find(TAG_MAGIC, at + 1)
    return found


@dataclass(frozen=True)
class TurnPlan:
    """Where one turn sits in the stream: chunk indexes, all in the session's sequence."""

    first: int  # first chunk of the turn (its lead silence)
    last_voiced: int  # the chunk that ends the user's speech
    end: int  # one past the turn's last chunk (end of the silence after it)
    first_voiced: int = -1  # the chunk that starts the user's speech


@dataclass(frozen=True)
class ClientFormat:
    """The audio format a simulated client sends, e.g. ``48000x2`` (48 kHz stereo)."""

    rate: int = RATE
    channels: int = 1

    @classmethod
    def parse(cls, text: str) -> ClientFormat:
        rate, _, channels = text.lower().partition("x")
        return cls(int(rate), int(channels or 1))

    @property
    def native(self) -> bool:
        """Already the server's pipeline format: passed through, and its tags survive."""
        return (self.rate, self.channels) == (RATE, 1)

    def __str__(self) -> str:
        return f"{self.rate}x{self.channels}"


@dataclass(frozen=True)
class Plan:
    """The whole stream one client sends: turns of speech, each followed by silence."""

    chunks: list[bytes]
    turns: list[TurnPlan]
    format: ClientFormat = ClientFormat()

    @property
    def seconds(self) -> float:
        return len(self.chunks) * CHUNK_SECS


@dataclass(frozen=True)
class Speech:
    """What a simulated user says, turn by turn: its clips in turn (one clip: every turn)."""

    about: str  # in words, for the report
    clips: list[bytes]
    names: list[str]  # one per clip

    def spans(self) -> list[tuple[float, float, float]]:
        """Each clip's speech as ``make_plan`` marks it: the start of its first voiced chunk,
        the end of its last (seconds), and the clip's length."""
        marks = voiced([split(pcm) for pcm in self.clips])
        return [
            (mark[0] * CHUNK_SECS, (mark[-1] + 1) * CHUNK_SECS, len(pcm) / (2 * RATE))
            for mark, pcm in zip(marks, self.clips, strict=True)
        ]


def voiced(clips: list[list[bytes]]) -> list[list[int]]:
    """Each clip's chunks at or above ``VOICED_RMS`` (its speech); a clip without one is an
    error."""
    marks = [[i for i, chunk in enumerate(clip) if rms(chunk) >= VOICED_RMS] for clip in clips]
    if not all(marks):
        raise ValueError(f"speech clip {[bool(m) for m in marks].index(False)} has no voiced chunk")
    return marks


def make_plan(speech: bytes | Sequence[bytes], turns: int, gap: float) -> Plan:
    """``turns`` turns, each a clip of ``speech`` followed by ``gap`` seconds of silence: one
    clip spoken every turn, or several spoken in turn (again from the first when they run out)."""
    clips = [split(clip) for clip in ([speech] if isinstance(speech, bytes) else speech)]
    marks = voiced(clips)
    quiet = split(silence(gap))
    chunks: list[bytes] = []
    plans = []
    for index in range(turns):
        clip, mark = clips[index % len(clips)], marks[index % len(clips)]
        first = len(chunks)
        chunks += clip + quiet
        plans.append(TurnPlan(first, first + mark[-1], len(chunks), first + mark[0]))
    return Plan(chunks, plans)


def reformat(plan: Plan, fmt: ClientFormat) -> Plan:
    """``plan`` as a client capturing ``fmt`` would send it: the whole stream resampled once,
    the same mono in every channel, cut into chunks covering the same 32 ms each."""
    if fmt == plan.format:
        return plan
    pcm = as_format(b"".join(plan.chunks), fmt.rate, fmt.channels)
    frame_bytes = 2 * fmt.channels
    edges = [round(i * CHUNK_SECS * fmt.rate) * frame_bytes for i in range(len(plan.chunks) + 1)]
    chunks = [pcm[a:b] for a, b in itertools.pairwise(edges)]
    return replace(plan, chunks=chunks, format=fmt)
