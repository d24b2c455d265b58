"""The shared VAD: one ONNX session for all sessions, quiet windows skipped, speech still heard."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from pipecat.audio.vad.vad_analyzer import VADParams

from talkline.app import resource_options
from talkline.audio import silence
from talkline.services.turn_models import TurnModels
from tests.support import local_settings

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


WARM_UP = """
import asyncio, gc, sys
from talkline.resources import GEMINI_MODULE, ResourceOptions, SharedResources

async def main(gemini):
    shared = SharedResources(ResourceOptions(gemini=gemini))
    shared.start()
    await shared.wait_ready()
    warming_after_ready = shared.warm_up is not None and not shared.warm_up.done()
    if shared.warm_up is not None:
        await shared.warm_up
    await shared.settled.wait()
    collected = gc.get_objects()  # what a full collection walks: not the frozen ones
    service = sys.modules[GEMINI_MODULE].TalklineGeminiLiveService if gemini else None
    unfrozen = any(o is service for o in collected) if gemini else False
    print(len(collected) * 10 < gc.get_freeze_count(), unfrozen)
    print(warming_after_ready, GEMINI_MODULE in sys.modules)
    await shared.stop()

asyncio.run(main(sys.argv[1] == "gemini"))
"""


@pytest.mark.parametrize("brain", ["gemini", "local"])
def test_the_gemini_service_is_imported_once_ready_not_by_the_first_caller(brain: str) -> None:
    """With the Gemini brain, its service and SDK are imported right after the models load,
    not by the first caller and without delaying /ready; the offline brain never imports
    them. Then everything start-up loaded is frozen out of the collector's walks."""
    settings = local_settings(brain=brain, gemini_api_key="k" if brain == "gemini" else None)
    assert resource_options(settings).gemini is (brain == "gemini")
    done = subprocess.run(
        [sys.executable, "-c", WARM_UP, brain], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    gemini = brain == "gemini"
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == f"{gemini} {gemini}"
    # and then start-up's objects, the Gemini service included, are out of the collector's
    # sight (settle_heap): a full collection walks a tenth of them at most
    assert lines[-2] == "True False"
