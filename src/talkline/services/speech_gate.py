"""The Gemini brain's speech gate: Silero VAD for every session, scored in batches.

Gemini detects turns itself; the local VAD only reports who is speaking (RTVI events, the
latency metric) and lets the user barge in. Pipecat's Silero analyzer costs, per 32 ms
window of each session, a thread hop, one ONNX call and a BS.1770 loudness measurement
over the last 400 ms: about 40% of a streaming session's CPU. ``SpeechGate`` gives the
same decisions for a fraction of that:

- windows too quiet to hold speech are scored 0 on the event loop, with no model call;
- the others go to the process's ``SileroBatcher``, which scores every window that arrived
  within ``BATCH_SECS`` in one ONNX call on the event loop (each stream keeps its own
  recurrent state and context; a batch of ten costs about a third per window of ten single
  calls, and no thread hop);
- the volume gate uses the mean square of the last 400 ms (no K-weighting), which costs a
  dot product per window instead of a filter over 400 ms of audio.

The user's audio is pushed on before the VAD looks at it, so the batching delay (at most
``BATCH_SECS``) postpones speaking events, never the audio.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque

import numpy as np
import onnxruntime as ort
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams, VADState

from talkline.services.turn_models import SILENCE_PEAK, SharedSileroVADAnalyzer, _SharedSileroModel

BATCH_SECS = 0.008  # windows arriving this close together share one model call
RATE = 16000
WINDOW = 512  # samples Silero scores at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous window Silero sees before each window
VOLUME_WINDOWS = math.ceil(0.4 * RATE / WINDOW)  # Pipecat measures loudness over 400 ms
# A window scoring below this holds nothing that could be speech, even a soft onset or a
# quiet talker the VAD (confidence 0.7 and a minimum volume) would not yet call speech.
# (A window under SILENCE_PEAK is not scored at all: 0, quiet.)
QUIET_CONFIDENCE = 0.3
FULL_SCALE_SQ = 32768.0**2

# --- Pipecat internals this module relies on -----------------------------------------------
# tests/test_pipecat_contract.py checks each entry against the installed Pipecat. Using
# another private name means adding it here. (owner, name, kind, why)
PIPECAT_PRIVATE: tuple[tuple[type, str, str, str], ...] = (
    (SileroVADAnalyzer, "_run_analyzer", "calls", "Pipecat's state machine, scores given"),
    (SileroVADAnalyzer, "_get_smoothed_volume", "override", "mean-square volume"),
    (SileroVADAnalyzer, "_maybe_reset_model", "calls", "Silero's periodic state reset"),
    (SileroVADAnalyzer, "_model", "reads", "the stream's state, batched"),
    (SileroVADAnalyzer, "_vad_buffer", "reads", "audio not yet scored"),
    (SileroVADAnalyzer, "_vad_frames_num_bytes", "reads", "the window size in bytes"),
    (SileroVADAnalyzer, "_prev_volume", "reads", "the smoothed volume so far"),
    (SileroVADAnalyzer, "_smoothing_factor", "reads", "Pipecat's volume smoothing"),
    (SileroVADAnalyzer, "_vad_state", "reads", "whether a reset is due (quiet)"),
)


class SileroStream(_SharedSileroModel):
    """One stream's Silero state (recurrent state and context), scored by the batcher."""

    def reset_states(self, batch_size: int = 1) -> None:
        super().reset_states(batch_size)
        self.state = np.zeros((2, 1, 128), dtype=np.float32)
        self.context = np.zeros((1, CONTEXT), dtype=np.float32)


Pending = tuple[SileroStream, np.ndarray, asyncio.Future[float]]


class SileroBatcher:
    """Scores windows of many streams in one ONNX call, on the event loop.

    The first window to arrive schedules a flush ``batch_secs`` later; every window that
    arrives meanwhile (any session's, on that loop) is scored in the same call. The call
    runs on the loop itself: a batch of ten takes under a millisecond, and a thread would
    have to win the GIL from a busy loop several times per batch (at 40 sessions that
    convoy delayed decisions, and the audio queued behind them, by seconds).
    """

    def __init__(self, session: ort.InferenceSession, batch_secs: float = BATCH_SECS):
        self.session = session
        self._batch_secs = batch_secs
        self._pending: dict[asyncio.AbstractEventLoop, list[Pending]] = {}
        self.batches = 0
        self.windows = 0

    def stream(self) -> SileroStream:
        return SileroStream(self.session)

    def score(self, stream: SileroStream, window: np.ndarray) -> asyncio.Future[float]:
        """Speech confidence of one window (float32, WINDOW samples) of ``stream``."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[float] = loop.create_future()
        pending = self._pending.setdefault(loop, [])
        if not pending:
            loop.call_later(self._batch_secs, self._flush, loop)
        pending.append((stream, window, future))
        return future

    def close(self) -> None:
        self._pending.clear()

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._pending.pop(loop, [])
        live = [entry for entry in batch if not entry[2].done()]  # not cancelled meanwhile
        if not live:
            return
        try:
            confidences = self._infer(live)
        except Exception as error:  # the model failed: every window in the batch says so
            for _stream, _window, future in live:
                future.set_exception(error)
            return
        self.batches += 1
        self.windows += len(live)
        for (_stream, _window, future), confidence in zip(live, confidences, strict=True):
            future.set_result(confidence)

    def _infer(self, batch: list[Pending]) -> list[float]:
        streams = [stream for stream, _window, _future in batch]
        x = np.concatenate(
            [np.concatenate((s.context, w[None, :]), axis=1) for s, w, _f in batch], axis=0
        )
        state = np.concatenate([s.state for s in streams], axis=1)
        sr = np.array(RATE, dtype=np.int64)
        out, new_state = self.session.run(None, {"input": x, "state": state, "sr": sr})
        for i, stream in enumerate(streams):
            stream.state = new_state[:, i : i + 1, :].copy()
            stream.context = x[i : i + 1, -CONTEXT:].copy()
        return [float(c) for c in out[:, 0]]


class SpeechGate(SharedSileroVADAnalyzer):
    """Pipecat's Silero VAD decisions, scored by the shared batcher, on the event loop."""

    def __init__(self, batcher: SileroBatcher, *, params: VADParams):
        super().__init__(batcher.session, params=params)
        self._batcher = batcher
        self._stream = batcher.stream()
        self._model = self._stream  # what Pipecat's periodic reset resets
        self._scores: deque[float] = deque()
        self._volumes: deque[float] = deque()
        self._energies: deque[float] = deque(maxlen=VOLUME_WINDOWS)
        self._energy_sum = 0.0
        self.quiet_windows = 0  # windows in a row, up to the newest scored, with no speech

    def set_sample_rate(self, sample_rate: int) -> None:
        if sample_rate != RATE:
            raise ValueError(f"the speech gate scores {RATE} Hz audio, not {sample_rate} Hz")
        super().set_sample_rate(sample_rate)

    async def analyze_audio(self, buffer: bytes) -> VADState:
        """Score the whole windows ``buffer`` completes, then run Pipecat's state machine."""
        size = self._vad_frames_num_bytes
        unscored = self._vad_buffer + buffer
        for start in range(0, len(unscored) - size + 1, size):
            samples = np.frombuffer(unscored, dtype=np.int16, count=WINDOW, offset=start)
            window = samples.astype(np.float32)
            energy = float(np.dot(window, window))
            confidence = 0.0
            if max(window.max(), -window.min()) >= SILENCE_PEAK:
                confidence = await self._batcher.score(self._stream, window / 32768.0)
                self._maybe_reset_model(confidence)
            self.quiet_windows = self.quiet_windows + 1 if confidence < QUIET_CONFIDENCE else 0
            self._scores.append(confidence)
            self._volumes.append(self._volume(energy))
        state = self._run_analyzer(buffer)
        self.analyzed_bytes += len(buffer)
        return state

    # Pipecat's state machine asks for each window's confidence and volume, in order.
    def voice_confidence(self, buffer: bytes) -> float:
        return self._scores.popleft()

    def _get_smoothed_volume(self, audio: bytes) -> float:
        volume = self._volumes.popleft()
        return self._prev_volume + self._smoothing_factor * (volume - self._prev_volume)

    def _volume(self, energy: float) -> float:
        """Volume 0..1 like Pipecat's (-110..-10 LUFS), from the mean square of 400 ms.

        0 until 400 ms of audio has been seen, and below the BS.1770 gate of -70 LUFS.
        """
        if len(self._energies) == self._energies.maxlen:
            self._energy_sum -= self._energies[0]
        self._energies.append(energy)
        self._energy_sum += energy
        if len(self._energies) < VOLUME_WINDOWS or self._energy_sum <= 0:
            return 0.0
        mean_square = self._energy_sum / (VOLUME_WINDOWS * WINDOW) / FULL_SCALE_SQ
        level = -0.691 + 10 * math.log10(mean_square)
        return 0.0 if level < -70 else min(1.0, max(0.0, (level + 110) / 100))
