"""RateGuard alone, on a clock the test moves: the flood and audio-rate limits."""

from __future__ import annotations

import pytest

import talkline.transport
from talkline.transport import InputLimits, RateGuard
from tests.support import Clock

RATE = 16000
BYTES_PER_SEC = RATE * 2
CHUNK_SECS = 0.032  # what the JS client sends at 16 kHz


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(talkline.transport.time, "monotonic", fake)
    return fake


def audio_secs(guard: RateGuard, seconds: float, clock: Clock, *, speed: float) -> str | None:
    """Send ``seconds`` of audio in 32 ms chunks at ``speed`` times real time; first refusal."""
    for _ in range(round(seconds / CHUNK_SECS)):
        if problem := guard.audio(int(CHUNK_SECS * BYTES_PER_SEC), 16000, 1):
            return problem
        clock.advance(CHUNK_SECS / speed)
    return None


def test_messages_up_to_the_rate_in_one_instant_are_allowed(clock: Clock) -> None:
    guard = RateGuard(InputLimits(max_messages_per_second=200))
    assert [guard.message() for _ in range(200)] == [None] * 200


def test_one_message_over_the_burst_is_refused_naming_the_limit(clock: Clock) -> None:
    guard = RateGuard(InputLimits(max_messages_per_second=200))
    for _ in range(200):
        guard.message()
    assert guard.message() == "more than 200 messages per second"


def test_the_bucket_refills_with_time(clock: Clock) -> None:
    """Spent tokens come back at the rate: 0.1 s later, 20 more messages of 200/s."""
    guard = RateGuard(InputLimits(max_messages_per_second=200))
    for _ in range(200):
        guard.message()
    clock.advance(0.1)
    assert [guard.message() for _ in range(20)] == [None] * 20
    assert guard.message() is not None


def test_the_bucket_holds_no_more_than_one_second_of_messages(clock: Clock) -> None:
    """A long quiet spell does not bank more than ``max_messages_per_second`` tokens."""
    guard = RateGuard(InputLimits(max_messages_per_second=200))
    clock.advance(60)
    assert [guard.message() for _ in range(200)] == [None] * 200
    assert guard.message() is not None


def test_a_steady_200_per_second_is_allowed_for_long(clock: Clock) -> None:
    guard = RateGuard(InputLimits(max_messages_per_second=200))
    for _ in range(2000):
        assert guard.message() is None
        clock.advance(1 / 200)


def test_a_steady_rate_above_the_limit_is_refused(clock: Clock) -> None:
    """250/s: the 200-token burst covers 4 s at most before the bucket runs dry."""
    guard = RateGuard(InputLimits(max_messages_per_second=200))
    refused_at = None
    for index in range(2000):
        if guard.message() is not None:
            refused_at = index
            break
        clock.advance(1 / 250)
    assert refused_at is not None and 900 < refused_at < 1100


def test_real_time_audio_is_allowed_for_long(clock: Clock) -> None:
    guard = RateGuard(InputLimits())
    assert audio_secs(guard, 120, clock, speed=1.0) is None


def test_audio_a_little_fast_within_the_limit_is_allowed(clock: Clock) -> None:
    guard = RateGuard(InputLimits(max_audio_rate=1.5, audio_burst_secs=3.0))
    assert audio_secs(guard, 60, clock, speed=1.4) is None


def test_audio_the_burst_ahead_at_once_is_allowed(clock: Clock) -> None:
    """A client may send ``audio_burst_secs`` of buffered audio in one go."""
    guard = RateGuard(InputLimits(audio_burst_secs=3.0))
    assert guard.audio(int(2.9 * BYTES_PER_SEC), 16000, 1) is None


def test_audio_of_exactly_the_burst_at_once_is_allowed(clock: Clock) -> None:
    guard = RateGuard(InputLimits(audio_burst_secs=3.0))
    assert guard.audio(3 * BYTES_PER_SEC, 16000, 1) is None


def test_audio_over_the_burst_at_once_is_refused(clock: Clock) -> None:
    guard = RateGuard(InputLimits(audio_burst_secs=3.0))
    problem = guard.audio(int(3.2 * BYTES_PER_SEC), 16000, 1)
    assert problem == (
        "audio arrives faster than real time (3.2 s of audio in 0.0 s; at most 1.5x)"
    )


def test_audio_faster_than_the_rate_is_refused_once_past_the_burst(clock: Clock) -> None:
    """At 2x, the excess grows 0.5 s per second over the 1.5x allowance: past 3 s by ~6 s."""
    guard = RateGuard(InputLimits(max_audio_rate=1.5, audio_burst_secs=3.0))
    sent_secs = 0.0
    for _ in range(round(30 / CHUNK_SECS)):
        if guard.audio(int(CHUNK_SECS * BYTES_PER_SEC), 16000, 1) is not None:
            break
        sent_secs += CHUNK_SECS
        clock.advance(CHUNK_SECS / 2.0)
    else:
        pytest.fail("2x real time was never refused")
    assert 11.0 < sent_secs < 13.0  # audio - 1.5 * audio / 2 > 3  =>  audio > 12 s


def test_audio_rate_counts_from_the_first_audio_not_from_creation(clock: Clock) -> None:
    """A session that talks only after a quiet minute has no banked minute of audio."""
    guard = RateGuard(InputLimits(audio_burst_secs=3.0))
    clock.advance(60)
    assert guard.audio(int(3.2 * BYTES_PER_SEC), 16000, 1) is not None


def test_audio_rate_counts_each_frame_at_its_own_rate(clock: Clock) -> None:
    """At 8 kHz a byte is twice as much time as at 16 kHz, whatever the pipeline's rate."""
    guard = RateGuard(InputLimits(audio_burst_secs=3.0))
    assert guard.audio(int(3.2 * 8000 * 2), 8000, 1) is not None
    calm = RateGuard(InputLimits(audio_burst_secs=3.0))
    assert calm.audio(int(2.9 * 8000 * 2), 8000, 1) is None
