"""Moonshine ``base-en`` from moonshine-cpp's ORT files to fast int8 ONNX, once, into a cache.

moonshine-cpp ships the model in ONNX Runtime's ORT format with int8 weights that the graph
de-quantizes on every run, and a merged decoder whose ``If`` hides the weights from ONNX
Runtime's constant folding (the 32768 x 416 output matrix is transposed at every step). Here
ONNX Runtime's own ORT reader loads each file and saves it as standard ONNX; the weight
arithmetic is folded into plain float weights; the merged decoder is split into its two
branches (the first step, and the steps with a key/value cache); each model is then
dynamically quantized to int8 (the graph work is in ``moonshine_onnx``, imported only when a
conversion runs: ``onnx`` takes a quarter of a second to import). Same inputs give
byte-identical outputs, so the cache is keyed by the source files' hashes alone.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import shutil
import tempfile
import time
from pathlib import Path

from loguru import logger

CONVERTER_VERSION = "1"  # part of the cache key: bump it when the conversion changes
SOURCE_FILES = ("encoder_model.ort", "decoder_model_merged.ort", "tokenizer.bin")
MODEL_FILES = ("encoder.onnx", "decoder_first.onnx", "decoder_cached.onnx", "tokenizer.bin")


def bundled_source() -> Path:
    """moonshine-cpp's English base model directory.

    Found without importing the package: its ``__init__`` loads its own ONNX Runtime and
    C++ library into the process, which talkline does not use.
    """
    spec = importlib.util.find_spec("moonshine_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("moonshine-cpp is not installed (pip install moonshine-cpp)")
    return Path(spec.submodule_search_locations[0], "models", "base-en")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/talkline`` or ``~/.cache/talkline``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "talkline"


def source_key(source: Path) -> str:
    """A hash of the converter's version and the source files' bytes."""
    digest = hashlib.sha256(CONVERTER_VERSION.encode())
    for name in SOURCE_FILES:
        digest.update(name.encode())
        digest.update(hashlib.sha256((source / name).read_bytes()).digest())
    return digest.hexdigest()[:16]


def ensure_converted(source: Path, cache_dir: Path) -> Path:
    """The converted model's directory, converting first if the cache lacks it.

    A lock file makes concurrent workers wait for one conversion instead of racing; the
    result appears under its final name only when complete.
    """
    missing = [name for name in SOURCE_FILES if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(f"no Moonshine model in {source} (missing {', '.join(missing)})")
    target = cache_dir / f"moonshine-base-en-{source_key(source)}"
    if _complete(target):
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".moonshine.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _complete(target):
            _convert_into(source, target)
    return target


def _complete(target: Path) -> bool:
    return all((target / name).is_file() for name in MODEL_FILES)


def _convert_into(source: Path, target: Path) -> None:
    logger.info(
        f"Converting Moonshine base-en to int8 ONNX into {target} "
        "(once per installation; about half a minute)…"
    )
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=".moonshine-", dir=target.parent))
    try:
        convert(source, work)
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info(f"Moonshine converted in {time.monotonic() - started:.1f} s")


def convert(source: Path, out: Path) -> None:
    """Write ``MODEL_FILES`` into ``out`` from moonshine-cpp's files in ``source``."""
    from talkline.services.moonshine_onnx import convert_files

    convert_files(source, out)
