"""The Gemini brain's speech gate decides like Pipecat's Silero VAD, in shared batches."""

from __future__ import annotations

import asyncio
from typing import TypeVar

from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams, VADState

from talkline.audio import silence
from talkline.services.turn_models import TurnModels

A = TypeVar("A", bound=VADAnalyzer)
CHUNK = 512 * 2  # the page's 32 ms mic chunk, one Silero window
SESSIONS = 4


def chunks(audio: bytes) -> list[bytes]:
    return [audio[i : i + CHUNK] for i in range(0, len(audio) - CHUNK + 1, CHUNK)]


def edges(states: list[VADState]) -> list[tuple[int, VADState]]:
    """(chunk index, state) where the VAD turned SPEAKING or QUIET: what becomes an event."""
    found: list[tuple[int, VADState]] = []
    last = VADState.QUIET
    for index, state in enumerate(states):
        if state in (VADState.SPEAKING, VADState.QUIET) and state != last:
            found.append((index, state))
            last = state
    return found


def ready(analyzer: A) -> A:
    analyzer.set_sample_rate(16000)
    return analyzer


async def test_gate_speaks_when_pipecat_silero_does_and_sessions_share_batches(
    weather_pcm: bytes,
) -> None:
    """Four sessions, each hearing two utterances at its own times, at once: each gate starts
    and stops within two windows of Pipecat's Silero analyzer fed that session's audio, and
    the sessions share model calls."""
    models = TurnModels()
    try:
        audios, references, expected = [], [], []
        for session in range(SESSIONS):
            lead = silence(1.0 + 0.7 * session)
            utterances = weather_pcm + silence(1.5 - 0.4 * session) + weather_pcm
            audios.append(chunks(lead + utterances + silence(3.0 - 0.7 * session)))
            references.append(ready(models.vad(VADParams())))
        for audio, reference in zip(audios, references, strict=True):
            expected.append([await reference.analyze_audio(chunk) for chunk in audio])
        gates = [ready(models.speech_gate(VADParams())) for _ in range(SESSIONS)]
        heard: list[list[VADState]] = [[] for _ in gates]
        pairs = list(zip(gates, audios, strict=True))
        for step in range(min(len(audio) for audio in audios)):
            states = await asyncio.gather(*(gate.analyze_audio(a[step]) for gate, a in pairs))
            for record, state in zip(heard, states, strict=True):
                record.append(state)

        for record, states in zip(heard, expected, strict=True):
            want = edges(states)
            assert [state for _, state in want] == [VADState.SPEAKING, VADState.QUIET] * 2
            got = edges(record)
            assert [state for _, state in got] == [state for _, state in want]
            for (at, _), (wanted_at, _) in zip(got, want, strict=True):
                assert abs(at - wanted_at) <= 2
        # both say how far into the audio they have listened (services/shared_stt.py cuts
        # segments by it)
        heard_bytes = min(len(audio) for audio in audios) * CHUNK
        assert all(gate.analyzed_bytes == heard_bytes for gate in gates)
        assert all(
            ref.analyzed_bytes == len(a) * CHUNK for ref, a in zip(references, audios, strict=True)
        )
        batcher = models._batcher
        assert batcher is not None
        assert batcher.windows >= 1.5 * batcher.batches  # sessions were scored together
    finally:
        models.close()
