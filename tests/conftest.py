from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from talkline.audio import piper_speech
from tests.support import ServerThread, running_server

WEATHER = "What is the weather like in Paris today?"
GREETING = "Please tell me a story about a green dragon."


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Servers the tests start keep their history here, never in the user's data dir."""
    path = tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TALKLINE_DATA_DIR", str(path))
        yield path


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("speech")


@pytest.fixture(scope="session")
def weather_pcm(speech_dir: Path) -> bytes:
    """A spoken question, 16 kHz mono, made at test time with Piper."""
    return piper_speech(WEATHER, save=speech_dir / "weather.wav")


@pytest.fixture(scope="session")
def dragon_pcm(speech_dir: Path) -> bytes:
    return piper_speech(GREETING, save=speech_dir / "dragon.wav")


@pytest.fixture(scope="session")
def server() -> Iterator[ServerThread]:
    """One offline-brain server shared by the tests that need only defaults."""
    with running_server() as running:
        yield running


@pytest.fixture
def logged() -> Iterator[list[str]]:
    """The messages talkline logs during the test, at DEBUG and up."""
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="DEBUG")
    yield lines
    logger.remove(sink)
