"""Moonshine, the offline brain's default speech recognition: conversion, decoding, /ws."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from talkline.client import RTVIClient
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
