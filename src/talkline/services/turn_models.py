"""Silero VAD and Smart Turn v3, loaded once per process and shared by every session.

Pipecat's analyzers open one ONNX session per instance (and Smart Turn one thread per
instance). The ONNX sessions are stateless — Silero's recurrent state is an input, Smart
Turn looks at one buffer at a time — and ``InferenceSession.run`` is thread-safe, so each
session keeps its own analyzer state while the weights and threads are shared.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort
from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn, SmartTurnParams
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams, VADState

if TYPE_CHECKING:
    from talkline.services.speech_gate import SileroBatcher, SpeechGate

SILENCE_PEAK = 200  # int16 peak below which a window cannot be speech (about -44 dBFS)

# --- Pipecat internals this module relies on -----------------------------------------------
# The analyzers below skip the __init__ of Pipecat's class (it would load a model per
# session) and set the attributes it sets themselves, so they depend on what that __init__
# assigns as much as on Pipecat's private names. tests/test_pipecat_contract.py checks each
# entry against the installed Pipecat, and that a skipped __init__ assigns nothing that is
# not listed here. Using another private name means adding it here.
# (owner, name, kind, why); kind is "override", "calls", "reads" (reads or writes) or
# "replaces-init" (the owner's __init__ is skipped; its attributes are set here instead).
PIPECAT_PRIVATE: tuple[tuple[type, str, str, str], ...] = (
    (SileroOnnxModel, "__init__", "replaces-init", "borrow the shared ONNX session"),
    (SileroOnnxModel, "session", "reads", "set to the shared ONNX session"),
    (SileroOnnxModel, "sample_rates", "reads", "set as Pipecat's __init__ does"),
    (SileroVADAnalyzer, "__init__", "replaces-init", "no model loaded per session"),
    (SileroVADAnalyzer, "_model", "reads", "set to the shared model"),
    (SileroVADAnalyzer, "_windows_since_reset", "reads", "set as Pipecat's __init__ does"),
    (SileroVADAnalyzer, "_low_confidence_windows", "reads", "set as Pipecat's __init__ does"),
    (LocalSmartTurnAnalyzerV3, "__init__", "replaces-init", "no model loaded per session"),
    (LocalSmartTurnAnalyzerV3, "_log_data", "reads", "set off, as Pipecat's default"),
    (LocalSmartTurnAnalyzerV3, "_session", "reads", "set to the shared ONNX session"),
    (BaseSmartTurn, "_model_executor", "override", "run on the shared thread pool"),
    (BaseSmartTurn, "_executor", "reads", "cleared so cleanup leaves the shared pool alone"),
)


def _bundled(package: str, name: str) -> str:
    return str(resources.files(package).joinpath(name))


def _session(path: str, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


class _SharedSileroModel(SileroOnnxModel):
    """Silero's per-stream state around an ONNX session owned by someone else."""

    def __init__(self, session: ort.InferenceSession):
        self.session = session
        self.reset_states()
        self.sample_rates = [8000, 16000]


class SharedSileroVADAnalyzer(SileroVADAnalyzer):
    """A Silero VAD analyzer that borrows the process-wide ONNX session.

    Windows too quiet to hold speech are scored 0 without running the model: in a
    conversation most windows are silence, and Silero was a fifth of the server's time.

    ``analyzed_bytes`` says how far into the session's audio the VAD has listened, so the
    speech recognizer before it can cut its segments where the VAD's events happened in the
    audio, not where they reached it (services/shared_stt.py). ``state`` is the VAD's state
    after the newest audio: ``STARTING`` while it hears what may be the user speaking again
    before ``start_secs`` confirm it, which the turn-taking strategy will not end a turn on
    (services/turn_taking.py); ``speech_runs`` counts its turns into ``SPEAKING``, so the
    recognizer can tell an early transcript gone stale (services/shared_stt.py).
    """

    def __init__(self, session: ort.InferenceSession, *, params: VADParams):
        VADAnalyzer.__init__(self, sample_rate=None, params=params)
        self._model = _SharedSileroModel(session)
        self._windows_since_reset = 0
        self._low_confidence_windows = 0
        self.analyzed_bytes = 0
        self.state = VADState.QUIET
        self.speech_runs = 0  # times it has gone into SPEAKING

    async def analyze_audio(self, buffer: bytes) -> VADState:
        state = await super().analyze_audio(buffer)
        if state == VADState.SPEAKING and self.state != VADState.SPEAKING:
            self.speech_runs += 1
        self.state = state
        self.analyzed_bytes += len(buffer)
        return state

    def voice_confidence(self, buffer: bytes) -> float:
        samples = np.frombuffer(buffer, dtype=np.int16)
        if samples.size and int(np.abs(samples).max()) < SILENCE_PEAK:
            return 0.0
        return super().voice_confidence(buffer)


class SharedSmartTurnAnalyzer(LocalSmartTurnAnalyzerV3):
    """Smart Turn v3 whose ONNX session and inference threads are shared."""

    def __init__(
        self, session: ort.InferenceSession, executor: ThreadPoolExecutor, stop_secs: float
    ):
        BaseSmartTurn.__init__(self, params=SmartTurnParams(stop_secs=stop_secs))
        self._log_data = False
        self._session = session
        self._shared_executor = executor

    @property
    def _model_executor(self) -> ThreadPoolExecutor:
        return self._shared_executor

    async def cleanup(self) -> None:
        self._executor = None  # the shared pool outlives every session
        await super().cleanup()


class TurnModels:
    """The process's VAD and turn-detection weights, and the threads that run Smart Turn."""

    def __init__(self, turn_threads: int = 2):
        self.vad_session = _session(_bundled("pipecat.audio.vad.data", "silero_vad.onnx"))
        self.turn_session = _session(
            _bundled("pipecat.audio.turn.smart_turn.data", "smart-turn-v3.2-cpu.onnx")
        )
        self.turn_executor = ThreadPoolExecutor(turn_threads, thread_name_prefix="smart-turn")
        self._batcher: SileroBatcher | None = None

    def vad(self, params: VADParams) -> SharedSileroVADAnalyzer:
        return SharedSileroVADAnalyzer(self.vad_session, params=params)

    def speech_gate(self, params: VADParams) -> SpeechGate:
        """Silero scored in batches across sessions (the Gemini brain's VAD)."""
        from talkline.services.speech_gate import SileroBatcher, SpeechGate

        if self._batcher is None:
            self._batcher = SileroBatcher(self.vad_session)
        return SpeechGate(self._batcher, params=params)

    def smart_turn(self, stop_secs: float) -> SharedSmartTurnAnalyzer:
        return SharedSmartTurnAnalyzer(self.turn_session, self.turn_executor, stop_secs)

    def close(self) -> None:
        self.turn_executor.shutdown(wait=False, cancel_futures=True)
        if self._batcher is not None:
            self._batcher.close()
