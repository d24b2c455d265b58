"""Moonshine, the offline brain's default speech recognition: conversion, decoding, /ws."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from talkline.client import RTVIClient
from talkline.services import moonshine_stt
from talkline.services.moonshine_convert import (
    MODEL_FILES,
    bundled_source,
    convert,
    ensure_converted,
    source_key,
)
from talkline.services.moonshine_stt import SharedMoonshine, Tokenizer
from tests.support import ServerThread, final_transcript, speak_and_wait_for_answer, words


@pytest.fixture(scope="module")
def moonshine() -> Iterator[SharedMoonshine]:
    """The model as the server loads it: converted into the user's cache (once per machine)."""
    from talkline.config import Settings

    cache = Settings(_env_file=None).model_cache_path  # type: ignore[call-arg]
    yield SharedMoonshine(ensure_converted(bundled_source(), cache), concurrency=1, threads=1)


def digests(folder: Path) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in MODEL_FILES}


def test_conversion_is_byte_for_byte_reproducible(tmp_path: Path) -> None:
    """Two conversions of the same files into different folders give identical files."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    convert(bundled_source(), one)
    convert(bundled_source(), two)
    assert digests(one) == digests(two)


def test_cache_is_keyed_by_the_source_files(tmp_path: Path) -> None:
    """A changed source file gives another cache key; the same files, the same key."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("encoder_model.ort", "decoder_model_merged.ort", "tokenizer.bin"):
        (source / name).write_bytes(b"stand-in " + name.encode())
    first = source_key(source)
    assert source_key(source) == first
    (source / "tokenizer.bin").write_bytes(b"another tokenizer")
    assert source_key(source) != first


def test_a_model_folder_without_moonshine_files_is_a_clear_error(tmp_path: Path) -> None:
    """A wrong TALKLINE_MOONSHINE_MODEL names the folder and what is missing."""
    with pytest.raises(FileNotFoundError, match=r"no Moonshine model in .*encoder_model\.ort"):
        ensure_converted(tmp_path, tmp_path / "cache")


def test_tokenizer_reads_pieces_and_bytes() -> None:
    """Word pieces join with spaces; special tokens are dropped."""
    tokenizer = Tokenizer(bundled_source() / "tokenizer.bin")
    assert len(tokenizer.pieces) == 32000
    the = tokenizer.pieces.index("\u2581the".encode())
    dog = tokenizer.pieces.index("\u2581dog".encode())
    assert tokenizer.decode([1, the, dog, 2]) == "the dog"


def test_old_spellings_are_modernised() -> None:
    """Moonshine's "to-day" and "To-morrow" read as users write them."""
    tokenizer = Tokenizer(bundled_source() / "tokenizer.bin")
    pieces = [tokenizer.pieces.index(p.encode()) for p in ("\u2581to", "-", "day")]
    assert tokenizer.decode(pieces) == "today"


def test_transcribes_a_piper_sentence(moonshine: SharedMoonshine, weather_pcm: bytes) -> None:
    """The shared model hears Piper's question word for word."""
    text = moonshine.transcribe(weather_pcm)
    assert {"what", "is", "the", "weather", "like", "in", "paris", "today"} <= words(text), text


def test_transcribes_8khz_audio(moonshine: SharedMoonshine, weather_pcm: bytes) -> None:
    """Audio at the pipeline's other rate is brought to the model's 16 kHz first."""
    samples = np.frombuffer(weather_pcm, dtype=np.int16)[::2]  # 16 kHz → 8 kHz
    text = moonshine.transcribe(samples.tobytes(), sample_rate=8000)
    assert {"weather", "paris", "today"} <= words(text), text


def model_copy(moonshine: SharedMoonshine, folder: Path) -> Path:
    """The converted model's files alone, in ``folder``."""
    folder.mkdir()
    for name in MODEL_FILES:
        shutil.copyfile(moonshine.model_dir / name, folder / name)
    return folder


def test_the_optimized_graph_is_kept_and_loaded_as_is(
    moonshine: SharedMoonshine, weather_pcm: bytes, tmp_path: Path
) -> None:
    """The first load keeps ONNX Runtime's optimized graphs beside the model; later loads
    use them (not optimized again), and hear the same words."""
    folder = model_copy(moonshine, tmp_path / "model")
    first = SharedMoonshine(folder, concurrency=1, threads=1)
    kept = sorted(folder.glob("*.ort-*.onnx"))
    assert [p.name.split(".")[0] for p in kept] == ["decoder_cached", "decoder_first", "encoder"]
    made = {p: p.stat().st_mtime_ns for p in kept}
    again = SharedMoonshine(folder, concurrency=1, threads=1)
    assert {p: p.stat().st_mtime_ns for p in kept} == made
    heard = moonshine.transcribe(weather_pcm)
    assert first.transcribe(weather_pcm) == heard == again.transcribe(weather_pcm)


def test_a_damaged_optimized_graph_is_made_again(
    moonshine: SharedMoonshine, weather_pcm: bytes, tmp_path: Path
) -> None:
    folder = model_copy(moonshine, tmp_path / "model")
    SharedMoonshine(folder, concurrency=1, threads=1)
    encoder = next(folder.glob("encoder.ort-*.onnx"))
    encoder.write_bytes(b"not a model")
    repaired = SharedMoonshine(folder, concurrency=1, threads=1)
    assert encoder.stat().st_size > 1000
    assert repaired.transcribe(weather_pcm) == moonshine.transcribe(weather_pcm)


def test_a_folder_that_cannot_be_written_keeps_nothing_and_still_loads(
    moonshine: SharedMoonshine, weather_pcm: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The container's model folder is read-only (and the tests run as root, whom no mode
    stops): the load asks ``os.access``, which says no here."""
    folder = model_copy(moonshine, tmp_path / "locked")
    real_access = os.access

    def access(path: Path, mode: int) -> bool:
        return Path(path) != folder and real_access(path, mode)

    monkeypatch.setattr(moonshine_stt.os, "access", access)
    loaded = SharedMoonshine(folder, concurrency=1, threads=1)
    assert not list(folder.glob("*.ort-*.onnx")) and not list(folder.glob(".*"))
    assert loaded.transcribe(weather_pcm) == moonshine.transcribe(weather_pcm)


def test_silence_and_a_click_transcribe_to_nothing(moonshine: SharedMoonshine) -> None:
    """Too little audio to hold a word gives an empty transcript, not an error."""
    assert moonshine.transcribe(b"") == ""
    assert moonshine.transcribe(np.full(400, 3000, dtype=np.int16).tobytes()) == ""


async def test_moonshine_answers_through_ws(
    server: ServerThread, weather_pcm: bytes, logged: list[str]
) -> None:
    """The offline default hears a spoken question with Moonshine and answers it, and
    Pipecat has nothing to complain about in the service's set-up."""
    async with RTVIClient(server.ws_url) as client:
        ready = await client.client_ready()
        assert ready.data["about"]["stt"] == "moonshine"
        await speak_and_wait_for_answer(client, weather_pcm)
    assert {"weather", "paris", "today"} <= words(final_transcript(client))
    assert not [line for line in logged if "NOT_GIVEN" in line]


def test_8khz_audio_is_resampled_to_16khz() -> None:
    """A second at 8 kHz becomes a second at 16 kHz, its tone at the same pitch."""
    from talkline.services.moonshine_stt import _to_model_rate

    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)).astype(np.int16)
    audio = _to_model_rate(tone, 8000)
    assert audio.size == 16000
    assert abs(int(np.abs(np.fft.rfft(audio)).argmax()) - 440) <= 1
