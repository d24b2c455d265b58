"""``talkline talk``: a command-line RTVI client that speaks a WAV and reports the answers."""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import pytest

from talkline.audio import as_format, peak, piper_speech, write_wav
from talkline.talk import server_url
from tests.support import ServerThread


def talk(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "talkline", "talk", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


def stereo_44k(pcm16k: bytes, path: Path) -> None:
    """The same speech as a 44.1 kHz stereo file, to prove any WAV is converted."""
    write_wav(path, as_format(pcm16k, 44100, 2), 44100, channels=2)


def test_talk_prints_the_conversation_and_saves_the_reply(
    server: ServerThread, tmp_path: Path
) -> None:
    """A 44.1 kHz stereo WAV is spoken; transcript, answer and latency come back; exit 0."""
    pcm = piper_speech("Can you hear me clearly now?", save=tmp_path / "q.wav")
    stereo_44k(pcm, tmp_path / "q44.wav")
    out = tmp_path / "reply.wav"
    result = talk(str(tmp_path / "q44.wav"), "--url", server.ws_url, "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "at 16000 Hz, 1 channel" in result.stdout
    assert "user: Can you hear me clearly now?" in result.stdout
    assert "bot: You said:" in result.stdout
    assert "response latency:" in result.stdout
    assert "answer(s); response latency median" in result.stdout
    with wave.open(str(out)) as wav:
        assert wav.getframerate() == 24000
        assert peak(wav.readframes(wav.getnframes())) > 1000


def test_talk_native_sends_the_wavs_own_rate_and_channels(
    server: ServerThread, tmp_path: Path
) -> None:
    """--native streams 44.1 kHz stereo as it is; the server converts it and hears the words."""
    pcm = piper_speech("Can you hear me clearly now?", save=tmp_path / "q.wav")
    stereo_44k(pcm, tmp_path / "q44.wav")
    result = talk(str(tmp_path / "q44.wav"), "--url", server.ws_url, "--native")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "at 44100 Hz, 2 channels" in result.stdout
    assert "user: Can you hear me clearly now?" in result.stdout


def test_talk_json_is_one_event_per_line(server: ServerThread, tmp_path: Path) -> None:
    """--json prints machine-readable events, including the measured latency."""
    piper_speech("Good morning to you.", save=tmp_path / "m.wav")
    result = talk(str(tmp_path / "m.wav"), "--url", server.ws_url, "--json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = {event["type"] for event in events}
    assert {"bot-ready", "user-transcription", "latency", "bot-stopped-speaking"} <= kinds
    latency = next(event for event in events if event["type"] == "latency")
    assert latency["ms"] > 0


def test_talk_fails_clearly_when_no_server_answers(tmp_path: Path) -> None:
    """No server: a one-line error and a non-zero exit."""
    piper_speech("Hello.", save=tmp_path / "h.wav")
    result = talk(str(tmp_path / "h.wav"), "--url", "ws://127.0.0.1:9/ws")
    assert result.returncode == 1
    assert "cannot talk to ws://127.0.0.1:9/ws" in result.stderr


def test_talk_refuses_a_file_that_is_not_a_wav(tmp_path: Path) -> None:
    """Not a WAV: exit 2 naming the file."""
    bogus = tmp_path / "notes.wav"
    bogus.write_text("not audio")
    result = talk(str(bogus))
    assert result.returncode == 2
    assert "notes.wav" in result.stderr


def test_talk_takes_the_address_the_page_is_served_at(server: ServerThread, tmp_path: Path) -> None:
    """``--url http://host:port`` (what a user copies from the browser) reaches /ws."""
    piper_speech("Hello there.", save=tmp_path / "h.wav")
    result = talk(str(tmp_path / "h.wav"), "--url", server.http_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bot: You said:" in result.stdout


@pytest.mark.parametrize(
    ("given", "reached"),
    [
        ("http://127.0.0.1:5000", "ws://127.0.0.1:5000/ws"),
        ("https://voice.example.com/", "wss://voice.example.com/ws"),
        ("http://h:5000/talkline", "ws://h:5000/talkline/ws"),
        ("127.0.0.1:5000", "ws://127.0.0.1:5000/ws"),
        ("ws://h:5000", "ws://h:5000/ws"),
        ("wss://h/custom?x=1", "wss://h/custom?x=1"),
    ],
)
def test_server_addresses_become_their_websocket(given: str, reached: str) -> None:
    assert server_url(given) == reached


def test_talk_refuses_an_address_that_is_no_server(tmp_path: Path) -> None:
    """ftp://, or no host: exit 2 with one line saying what to give, no traceback."""
    piper_speech("Hello.", save=tmp_path / "h.wav")
    result = talk(str(tmp_path / "h.wav"), "--url", "ftp://example.com")
    assert result.returncode == 2
    assert "not a server address" in result.stderr and "Traceback" not in result.stderr
