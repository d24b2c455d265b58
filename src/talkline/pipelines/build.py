"""One Pipecat pipeline per session, for the brain the settings choose."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.services.llm_service import LLMService
from pipecat.services.tts_service import TextAggregationMode
from pipecat.transports.base_transport import BaseTransport
from pipecat.turns.user_start import VADUserTurnStartStrategy
from pipecat.turns.user_stop import (
    BaseUserTurnStopStrategy,
    SpeechTimeoutUserTurnStopStrategy,
    TurnAnalyzerUserTurnStopStrategy,
)
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from talkline.config import Settings, reveal
from talkline.resources import SharedResources
from talkline.services.moonshine_stt import MoonshineSTTService
from talkline.services.piper_tts import PiperHttpTTSService
from talkline.services.responder import build_responder, phrase_by_phrase
from talkline.services.shared_stt import SharedModelSTT
from talkline.services.speculation import HeldSpeechGate, SpeculationMarker
from talkline.services.turn_models import SharedSileroVADAnalyzer
from talkline.services.turn_taking import TranscriptTurnStopStrategy, TurnWaits

if TYPE_CHECKING:
    from talkline.services.gemini import GeminiOptions, UpstreamResume, UpstreamStats

TRANSCRIPT_WAIT_SECS = 12.0


def user_params(
    settings: Settings,
    shared: SharedResources,
    strategies: UserTurnStrategies,
    *,
    batched_vad: bool = False,
) -> LLMUserAggregatorParams:
    """Silero VAD on the shared model, with the given turn strategies.

    ``batched_vad``: the speech gate that scores all sessions' windows in shared batches
    (see services/speech_gate.py), for brains that detect turns themselves.
    """
    assert shared.turn_models is not None
    params = VADParams(
        confidence=settings.vad_confidence,
        start_secs=settings.vad_start_secs,
        stop_secs=settings.vad_stop_secs,
        min_volume=settings.vad_min_volume,
    )
    models = shared.turn_models
    vad = models.speech_gate(params) if batched_vad else models.vad(params)
    return LLMUserAggregatorParams(
        vad_analyzer=vad,
        user_turn_strategies=strategies,
        # A busy server's transcripts can come late; ending the turn without one would
        # start a second, phantom turn when the transcript arrives (+5 s per answer).
        user_turn_stop_timeout=TRANSCRIPT_WAIT_SECS,
    )


def local_turn_strategies(settings: Settings, shared: SharedResources) -> UserTurnStrategies:
    """When the user has finished: Smart Turn v3 (shared model) with the transcript's say
    (services/turn_taking.py), Smart Turn alone, or a silence timeout."""
    assert shared.turn_models is not None
    strategy = settings.effective_turn_strategy
    stop: BaseUserTurnStopStrategy
    if strategy == "silence":
        return UserTurnStrategies(stop=[SpeechTimeoutUserTurnStopStrategy()])
    analyzer = shared.turn_models.smart_turn(settings.smart_turn_stop_secs)
    if strategy == "transcript":
        waits = settings.options(TurnWaits, prefix="turn_")
        speculate = speculates(settings)
        stop = TranscriptTurnStopStrategy(turn_analyzer=analyzer, waits=waits, speculate=speculate)
    else:
        stop = TurnAnalyzerUserTurnStopStrategy(turn_analyzer=analyzer)
    return UserTurnStrategies(stop=[stop])


def speculates(settings: Settings) -> bool:
    """Whether the offline brain starts answering during the transcript strategy's wait."""
    return settings.turn_speculate and settings.effective_turn_strategy == "transcript"


def build_stt(settings: Settings, shared: SharedResources) -> FrameProcessor:
    if settings.effective_stt == "deepgram":
        from pipecat.services.deepgram.stt import DeepgramSTTService  # only when used

        return DeepgramSTTService(
            api_key=reveal(settings.deepgram_api_key),
            base_url=settings.deepgram_base_url or "",
            settings=DeepgramSTTService.Settings(model=settings.deepgram_model),
        )
    if settings.effective_stt == "moonshine":
        assert shared.moonshine is not None
        return MoonshineSTTService(shared.moonshine)
    from talkline.services.local_stt import SharedWhisperSTTService  # faster-whisper: only here

    assert shared.whisper is not None
    return SharedWhisperSTTService(shared.whisper)


def build_tts(settings: Settings, shared: SharedResources) -> FrameProcessor:
    if settings.effective_tts == "elevenlabs":
        from talkline.services.elevenlabs_tts import ElevenLabsAnswerTTSService  # only when used

        return ElevenLabsAnswerTTSService(
            api_key=reveal(settings.elevenlabs_api_key),
            url=settings.elevenlabs_url or "wss://api.elevenlabs.io",
            settings=ElevenLabsAnswerTTSService.Settings(
                voice=settings.elevenlabs_voice, model=settings.elevenlabs_model
            ),
        )
    assert shared.http is not None
    mode = TextAggregationMode.TOKEN if phrase_by_phrase(settings) else None
    return PiperHttpTTSService(
        base_url=shared.tts_url,
        voice=shared.tts_voice,
        http=shared.http,
        text_aggregation_mode=mode,
    )


def build_cascade_pipeline(
    settings: Settings, transport: BaseTransport, shared: SharedResources
) -> BuiltPipeline:
    """Speech to text → responder → text to speech (Moonshine, Whisper or Deepgram; Piper or
    ElevenLabs)."""
    context = LLMContext()  # the responder carries the system instruction
    strategies = local_turn_strategies(settings, shared)
    params = user_params(settings, shared, strategies)
    aggregators = LLMContextAggregatorPair(context, user_params=params)
    responder = build_responder(settings, shared.llm.api_url if shared.llm else None)
    tts = build_tts(settings, shared)
    stt = build_stt(settings, shared)
    # Segments cut where the VAD was in the audio, however late its events come back. The
    # VAD must hear every frame the recognizer passes on: a mute strategy (none is set
    # here) would keep some from it, and the two counts would drift apart.
    vad, muting = params.vad_analyzer, bool(params.user_mute_strategies)
    if isinstance(stt, SharedModelSTT) and isinstance(vad, SharedSileroVADAnalyzer) and not muting:
        stt.follow(vad, early_secs=settings.stt_early_secs, stop_secs=settings.vad_stop_secs)
    for stop in strategies.stop or []:
        if isinstance(stop, TranscriptTurnStopStrategy):
            assert isinstance(vad, SharedSileroVADAnalyzer)  # user_params made it
            stop.hear_onsets(vad)  # no turn ends while the VAD hears speech starting
    # A speculative answer is generated and spoken into a hold, released at the turn's end.
    marker = SpeculationMarker(responder_holds=isinstance(responder, LLMService))
    early = speculates(settings)
    pipeline = Pipeline(
        [
            transport.input(),
            stt,
            aggregators.user(),
            *([marker, responder, tts, HeldSpeechGate()] if early else [responder, tts]),
            transport.output(),
            aggregators.assistant(),
        ]
    )
    return BuiltPipeline(pipeline, early_answers=early)


@dataclass
class SessionHooks:
    """What a pipeline's services report back to their session."""

    on_fatal: Callable[[str], Awaitable[None]]
    on_reconnect: Callable[[], None] = lambda: None
    # resume: the newest Gemini handle, the words so far, where each new handle goes
    handle: str = ""
    transcript: list[dict[str, str]] = field(default_factory=list)
    on_handle: Callable[[str, list[dict[str, str]]], Awaitable[None]] | None = None


@dataclass
class BuiltPipeline:
    pipeline: Pipeline
    upstream: UpstreamStats | None = None
    resume: UpstreamResume | None = None  # Gemini: whether the handle was taken
    early_answers: bool = False  # speculative answers are held (services/speculation.py)


def gemini_options(settings: Settings) -> GeminiOptions:
    from talkline.services.gemini import GeminiOptions  # only when used

    return settings.options(
        GeminiOptions,
        prefix="gemini_",
        system_instruction=settings.system_instruction,
        speaks=settings.effective_tts == "gemini",
        input_rate=settings.audio_in_rate,
    )


def build_gemini_pipeline(
    settings: Settings, transport: BaseTransport, shared: SharedResources, hooks: SessionHooks
) -> BuiltPipeline:
    """Gemini Live hears the user; it speaks itself, or writes text that a TTS speaks.

    Gemini decides when the user's turn ends, so Smart Turn (the largest CPU cost of a
    plain Pipecat bot) is not run; the local VAD still reports who is speaking and lets
    the user barge in.
    """
    from talkline.services.gemini import TalklineGeminiLiveService, UpstreamResume
    from talkline.services.speech_gate import SpeechGate

    realtime = UserTurnStrategies(
        start=[VADUserTurnStartStrategy()],
        stop=[SpeechTimeoutUserTurnStopStrategy(wait_for_transcript=False)],
    )
    params = user_params(settings, shared, realtime, batched_vad=True)
    gate = params.vad_analyzer
    assert isinstance(gate, SpeechGate)
    context = LLMContext()
    aggregators = LLMContextAggregatorPair(context, user_params=params)
    resume = UpstreamResume(hooks.handle, list(hooks.transcript), hooks.on_handle, context)
    gemini = TalklineGeminiLiveService(
        gemini_options(settings),
        on_fatal=hooks.on_fatal,
        on_reconnect=hooks.on_reconnect,
        resume=resume,
        quiet=gate,  # the upstream pauses while the speech gate hears nothing like speech
    )
    voice = [] if settings.effective_tts == "gemini" else [build_tts(settings, shared)]
    pipeline = Pipeline(
        [
            transport.input(),
            aggregators.user(),
            gemini,
            *voice,
            transport.output(),
            aggregators.assistant(),
        ]
    )
    return BuiltPipeline(pipeline, gemini.stats, resume)


class PipelineFactory:
    """Builds each session's pipeline: where the stage settings become Pipecat services."""

    def __init__(self, settings: Settings, shared: SharedResources):
        self._settings = settings
        self._shared = shared

    def build(self, transport: BaseTransport, hooks: SessionHooks) -> BuiltPipeline:
        settings, shared = self._settings, self._shared
        if settings.effective_brain == "gemini":
            return build_gemini_pipeline(settings, transport, shared, hooks)
        return build_cascade_pipeline(settings, transport, shared)
