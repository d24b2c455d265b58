"""The shared VAD: one ONNX session for all sessions, quiet windows skipped, speech still heard."""

from __future__ import annotations

import numpy as np
from pipecat.audio.vad.vad_analyzer import VADParams

from talkline.audio import silence
from talkline.services.turn_models import TurnModels

WINDOW = 512 * 2  # bytes in one 16 kHz Silero window


def test_quiet_windows_score_zero_without_the_model_and_speech_is_heard(
    weather_pcm: bytes,
) -> None:
    models = TurnModels()
    try:
        first, second = models.vad(VADParams()), models.vad(VADParams())
        first.set_sample_rate(16000)
        second.set_sample_rate(16000)
        assert first._model.session is second._model.session  # one set of weights
        calls = 0
        real_run = first._model.session.run

        def counting_run(*args: object, **kwargs: object) -> object:
            nonlocal calls
            calls += 1
            return real_run(*args, **kwargs)

        first._model.session = type("Counting", (), {"run": staticmethod(counting_run)})()
        assert first.voice_confidence(silence(0.032)) == 0.0
        assert calls == 0
        windows = [weather_pcm[i : i + WINDOW] for i in range(0, len(weather_pcm) - WINDOW, WINDOW)]
        scores = [float(np.ravel(first.voice_confidence(window))[0]) for window in windows]
        assert calls > 0 and max(scores) > 0.9
    finally:
        models.close()
