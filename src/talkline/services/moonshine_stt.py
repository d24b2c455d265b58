"""Moonshine speech-to-text: one model per process, shared by all sessions.

Moonshine's encoder reads the utterance as it is (Whisper pads every utterance to a 30 s
window), so a short turn is transcribed in a fraction of Whisper's time. The model is the
int8 ONNX that ``moonshine_convert`` makes from moonshine-cpp's bundled files; decoding is
greedy, one token at a time with the decoder's key/value cache. A semaphore bounds how many
transcriptions run at once so a burst of sessions queues instead of oversubscribing the CPU.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
from loguru import logger
from pipecat.services.settings import STTSettings
from pipecat.transcriptions.language import Language

from talkline.services.shared_stt import SharedModelSTT

MODEL_RATE = 16000
START_TOKEN, END_TOKEN = 1, 2  # <s>, </s>
TOKENS_PER_SECOND = 6.5  # Moonshine's own bound on tokens per second of audio
MIN_SAMPLES = MODEL_RATE // 10  # the encoder's convolutions need about 0.1 s
TRAILING_SILENCE_SECS = 0.1  # Moonshine needs little padding to finish the last word
# Moonshine learnt some words from old books: "to-day", "to-morrow", "to-night".
OLD_SPELLINGS = re.compile(r"\b([Tt]o)-(day|morrow|night)\b")
TTFS_P99_SECS = 0.5  # speech end → transcript on two busy cores


class Tokenizer:
    """moonshine-cpp's ``tokenizer.bin``: each token's bytes, prefixed by their length.

    A length of 128 or more takes two bytes (low 7 bits first). Pieces use SentencePiece's
    ``▁`` for a space; ids 3-258 are single raw bytes.
    """

    def __init__(self, path: Path):
        data = path.read_bytes()
        self.pieces: list[bytes] = []
        at = 0
        while at < len(data):
            size = data[at]
            at += 1
            if size >= 128:
                size = (size & 0x7F) + (data[at] << 7)
                at += 1
            self.pieces.append(data[at : at + size])
            at += size

    def decode(self, ids: list[int]) -> str:
        special = (0, START_TOKEN, END_TOKEN)
        raw = b"".join(self.pieces[i] for i in ids if i < len(self.pieces) and i not in special)
        text = raw.decode("utf-8", errors="replace").replace("\u2581", " ").strip()
        return OLD_SPELLINGS.sub(r"\1\2", text)


def _session(path: Path, threads: int) -> ort.InferenceSession:
    """The model at ``path``, with ONNX Runtime's graph optimizations done once, not at every
    start (they took ~0.7 s of the three models' ~1 s load, on the offline brain's path to
    ``/ready``): the optimized graph is kept beside the model, one per onnxruntime version, and
    later starts load it as it is. Where the cache cannot be written (a read-only image), the
    model is optimized at every start, as before."""
    optimized = path.with_name(f"{path.stem}.ort-{ort.__version__}.onnx")
    if optimized.is_file():
        try:
            return _load(optimized, threads, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        except Exception as error:  # damaged, or written by another build: made again below
            logger.warning(f"{optimized.name} unreadable ({error}); optimizing {path.name} again")
    if os.access(path.parent, os.W_OK):
        staged = path.with_name(f".{optimized.name}.{os.getpid()}")
        try:
            session = _load(path, threads, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, staged)
            os.replace(staged, optimized)  # whole or not at all, for workers starting at once
            for stale in path.parent.glob(f"{path.stem}.ort-*.onnx"):
                if stale != optimized:  # an earlier onnxruntime's
                    stale.unlink(missing_ok=True)
            return session
        except Exception as error:
            logger.warning(f"could not keep {path.name} optimized ({error})")
        finally:
            staged.unlink(missing_ok=True)
    return _load(path, threads, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)


def _load(
    path: Path, threads: int, level: ort.GraphOptimizationLevel, save_to: Path | None = None
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = level
    if save_to is not None:
        options.optimized_model_filepath = str(save_to)
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class SharedMoonshine:
    """The process-wide Moonshine model and the slots that bound its concurrency."""

    def __init__(self, model_dir: Path, *, concurrency: int, threads: int):
        self.model_dir = model_dir
        self.encoder = _session(model_dir / "encoder.onnx", threads)
        self.first = _session(model_dir / "decoder_first.onnx", threads)
        self.cached = _session(model_dir / "decoder_cached.onnx", threads)
        self.tokenizer = Tokenizer(model_dir / "tokenizer.bin")
        self._first_outputs = [output.name for output in self.first.get_outputs()]
        self._cached_outputs = [output.name for output in self.cached.get_outputs()]
        self.slots = asyncio.Semaphore(concurrency)
        logger.info(f"Moonshine model loaded from {model_dir} ({concurrency} slots)")

    def transcribe(self, pcm: bytes, sample_rate: int = MODEL_RATE) -> str:
        """Speech in 16-bit mono PCM to text; blocking, run it in a thread."""
        audio = _to_model_rate(np.frombuffer(pcm, dtype=np.int16), sample_rate)
        if audio.size < MIN_SAMPLES:
            return ""
        limit = int(audio.size / MODEL_RATE * TOKENS_PER_SECOND) + 4
        return self.tokenizer.decode(self.decode(audio[np.newaxis, :], limit))

    def decode(self, audio: np.ndarray, limit: int) -> list[int]:
        """Greedy decoding: the likeliest token each step, until ``</s>`` or ``limit`` tokens."""
        (hidden,) = self.encoder.run(["last_hidden_state"], {"input_values": audio})
        step = np.array([[START_TOKEN]], dtype=np.int64)
        outputs = self.first.run(None, {"input_ids": step, "encoder_hidden_states": hidden})
        cache = _as_past(self._first_outputs, outputs)  # cross-attention K/V: kept throughout
        tokens: list[int] = []
        while len(tokens) < limit:
            token = int(outputs[0][0, -1].argmax())
            if token == END_TOKEN:
                break
            tokens.append(token)
            step = np.array([[token]], dtype=np.int64)
            outputs = self.cached.run(None, {"input_ids": step, **cache})
            cache.update(_as_past(self._cached_outputs, outputs))
        return tokens


def _as_past(names: list[str], outputs: list[np.ndarray]) -> dict[str, np.ndarray]:
    """A step's ``present.*`` outputs as the next step's ``past_key_values.*`` inputs."""
    return {
        name.replace("present.", "past_key_values.", 1): value
        for name, value in zip(names, outputs, strict=True)
        if name.startswith("present.")
    }


def _to_model_rate(samples: np.ndarray, rate: int) -> np.ndarray:
    audio = samples.astype(np.float32) / 32768.0
    if rate == MODEL_RATE or audio.size == 0:
        return audio
    count = round(audio.size * MODEL_RATE / rate)
    return np.interp(np.linspace(0, audio.size - 1, count), np.arange(audio.size), audio).astype(
        np.float32
    )


class MoonshineSTTService(SharedModelSTT):
    """Transcribes each utterance the VAD delimits with the shared Moonshine model."""

    _shared: SharedMoonshine

    def __init__(self, shared: SharedMoonshine, **kwargs):
        self._shared = shared
        super().__init__(
            settings=STTSettings(model="moonshine-base-en", language=Language.EN),
            trailing_silence_secs=TRAILING_SILENCE_SECS,
            ttfs_p99_latency=TTFS_P99_SECS,
            **kwargs,
        )

    @property
    def wants_wav_segments(self) -> bool:
        return False  # raw 16-bit PCM

    def can_generate_metrics(self) -> bool:
        return True

    def transcribe(self, audio: bytes) -> str:
        return self._shared.transcribe(audio, self.sample_rate)
