"""One Pipecat pipeline per session, for the brain the settings choose."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.transports.base_transport import BaseTransport
from pipecat.turns.user_start import VADUserTurnStartStrategy
from pipecat.turns.user_stop import (
    BaseUserTurnStopStrategy,
    SpeechTimeoutUserTurnStopStrategy,
    TurnAnalyzerUserTurnStopStrategy,
)
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from talkline.config import Settings
from talkline.resources import SharedResources
from talkline.services.gemini import OnFatal, TalklineGeminiLiveService, UpstreamStats
from talkline.services.local_stt import SharedWhisperSTTService
from talkline.services.piper_tts import PiperHttpTTSService
from talkline.services.responder import build_responder


def user_params(
    settings: Settings, shared: SharedResources, strategies: UserTurnStrategies
) -> LLMUserAggregatorParams:
    """Silero VAD on the shared model, with the given turn strategies."""
    assert shared.turn_models is not None
    vad = shared.turn_models.vad(
        VADParams(
            confidence=settings.vad_confidence,
            start_secs=settings.vad_start_secs,
            stop_secs=settings.vad_stop_secs,
            min_volume=settings.vad_min_volume,
        )
    )
    return LLMUserAggregatorParams(vad_analyzer=vad, user_turn_strategies=strategies)


def local_turn_strategies(settings: Settings, shared: SharedResources) -> UserTurnStrategies:
    """Smart Turn v3 (shared model) decides when the user has finished, or a silence timeout."""
    assert shared.turn_models is not None
    stop: BaseUserTurnStopStrategy
    if settings.smart_turn:
        stop = TurnAnalyzerUserTurnStopStrategy(turn_analyzer=shared.turn_models.smart_turn())
    else:
        stop = SpeechTimeoutUserTurnStopStrategy()
    return UserTurnStrategies(stop=[stop])


def build_local_pipeline(
    settings: Settings, transport: BaseTransport, shared: SharedResources
) -> Pipeline:
    """Whisper → responder → Piper, all on this machine."""
    assert shared.whisper is not None and shared.http is not None
    context = LLMContext()  # the responder carries the system instruction
    params = user_params(settings, shared, local_turn_strategies(settings, shared))
    aggregators = LLMContextAggregatorPair(context, user_params=params)
    tts = PiperHttpTTSService(base_url=shared.tts_url, voice=shared.tts_voice, http=shared.http)
    return Pipeline(
        [
            transport.input(),
            SharedWhisperSTTService(shared.whisper),
            aggregators.user(),
            build_responder(settings),
            tts,
            transport.output(),
            aggregators.assistant(),
        ]
    )


@dataclass
class SessionHooks:
    """What a pipeline's services report back to their session."""

    on_fatal: OnFatal
    on_reconnect: Callable[[], None] = lambda: None


@dataclass
class BuiltPipeline:
    pipeline: Pipeline
    upstream: UpstreamStats | None = None


def build_gemini_pipeline(
    settings: Settings, transport: BaseTransport, shared: SharedResources, hooks: SessionHooks
) -> BuiltPipeline:
    """Speech in, speech out through Gemini Live.

    Gemini decides when the user's turn ends, so Smart Turn (the largest CPU cost of a
    plain Pipecat bot) is not run; the local VAD still reports who is speaking and lets
    the user barge in.
    """
    realtime = UserTurnStrategies(
        start=[VADUserTurnStartStrategy()],
        stop=[SpeechTimeoutUserTurnStopStrategy(wait_for_transcript=False)],
    )
    params = user_params(settings, shared, realtime)
    aggregators = LLMContextAggregatorPair(LLMContext(), user_params=params)
    gemini = TalklineGeminiLiveService(
        settings, on_fatal=hooks.on_fatal, on_reconnect=hooks.on_reconnect
    )
    pipeline = Pipeline(
        [
            transport.input(),
            aggregators.user(),
            gemini,
            transport.output(),
            aggregators.assistant(),
        ]
    )
    return BuiltPipeline(pipeline, gemini.stats)


def build_pipeline(
    settings: Settings, transport: BaseTransport, shared: SharedResources, hooks: SessionHooks
) -> BuiltPipeline:
    if settings.effective_brain == "gemini":
        return build_gemini_pipeline(settings, transport, shared, hooks)
    return BuiltPipeline(build_local_pipeline(settings, transport, shared))
