"""``talkline talk WAV``: speak a WAV file to a talkline server and report what came back."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from talkline.client import Event, RTVIClient

SETTLE_SECS = 1.5  # quiet time after the bot's last answer before hanging up


class AudioFileError(Exception):
    """The WAV file cannot be used."""


@dataclass(frozen=True)
class WavAudio:
    """A WAV's audio as 16-bit PCM, channels interleaved, at its own rate."""

    pcm: bytes
    rate: int
    channels: int


def _read_samples(path: Path) -> tuple[np.ndarray, int]:
    """Samples as float32 on the 16-bit scale, one column per channel, and the rate."""
    try:
        with wave.open(str(path), "rb") as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    except (OSError, wave.Error, EOFError) as error:
        raise AudioFileError(f"cannot read {path}: {error}") from None
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}.get(width)
    if dtype is None:
        raise AudioFileError(f"{path}: {8 * width}-bit samples are not supported")
    samples = np.frombuffer(raw, dtype=dtype).astype(np.float32)
    if width == 1:
        samples = (samples - 128) * 256
    elif width == 4:
        samples /= 65536
    return samples.reshape(-1, channels), rate


def _pcm16(samples: np.ndarray) -> bytes:
    return bytes(np.clip(samples, -32768, 32767).astype(np.int16).tobytes())


def read_wav_16k_mono(path: Path, rate: int = 16000) -> bytes:
    """Any 16-bit (or 8/32-bit) PCM WAV, as 16-bit mono PCM at ``rate``."""
    samples, source_rate = _read_samples(path)
    mono = samples.mean(axis=1)
    if source_rate != rate:
        mono = soxr.resample(mono, source_rate, rate)
    return _pcm16(mono)


def read_wav(path: Path, *, native: bool = False) -> WavAudio:
    """A WAV to send: at its own rate and channel count (``native``: the server converts
    them), or as 16 kHz mono."""
    if not native:
        return WavAudio(read_wav_16k_mono(path), 16000, 1)
    samples, rate = _read_samples(path)
    return WavAudio(_pcm16(samples.reshape(-1)), rate, samples.shape[1])


def write_wav(path: Path, pcm: bytes, rate: int) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)


def describe(event: Event) -> str | None:
    """An event in words, or None for events not worth a line."""
    data = event.data
    match event.type:
        case "bot-ready":
            about = data.get("about") or {}
            details = ", ".join(f"{k}={v}" for k, v in about.items() if k != "library_version")
            return f"bot ready ({details})"
        case "user-transcription" if data.get("final"):
            return f"user: {data.get('text', '').strip()}"
        case "bot-tts-text":
            return f"bot: {data.get('text', '').strip()}"
        case (
            "user-started-speaking"
            | "user-stopped-speaking"
            | "bot-started-speaking"
            | "bot-stopped-speaking"
            | "bot-interrupted"
        ):
            return event.type.replace("-", " ")
        case "error":
            return f"error: {data.get('error')}" + (" (fatal)" if data.get("fatal") else "")
        case "error-response":
            return f"error: {data.get('error')}"
        case "server-message":
            return f"server: {data.get('message', data)}"
        case "closed":
            return f"connection closed ({data.get('code')})"
    return None


@dataclass
class TalkResult:
    latencies: list[float]
    errors: list[str]
    close_code: int | None


async def talk(
    url: str, audio: WavAudio, *, out: Path | None, as_json: bool, wait: float = 30.0
) -> TalkResult:
    """Stream ``audio`` in real time, then silence until the bot has answered and gone quiet."""
    async with RTVIClient(url, sample_rate=audio.rate, channels=audio.channels) as client:
        printer = asyncio.create_task(_print_events(client, as_json))
        try:
            await client.client_ready()
            _announce(audio, as_json)
            await client.stream(audio.pcm)
            await _silence_until_answered(client, wait)
        finally:
            await client.close()
            await printer
        if out is not None:
            write_wav(out, bytes(client.bot_audio), client.bot_sample_rate)
    errors = [str(e.data.get("error")) for e in client.events if e.type.startswith("error")]
    if not client.turns:
        errors.append(f"no answer within {wait:.0f} s of the end of the audio")
    latencies = [turn.latency for turn in client.turns if turn.latency is not None]
    return TalkResult(latencies, errors, client.close_code)


def _announce(audio: WavAudio, as_json: bool) -> None:
    seconds = len(audio.pcm) / (2 * audio.channels * audio.rate)
    channels = f"{audio.channels} channel{'s' if audio.channels > 1 else ''}"
    payload = {"type": "sending", "seconds": round(seconds, 2), "sample_rate": audio.rate}
    text = f"sending {seconds:.1f} s of audio at {audio.rate} Hz, {channels}"
    _emit(payload | {"channels": audio.channels}, as_json, text)


async def _silence_until_answered(client: RTVIClient, wait: float) -> None:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and not client.closed:
        last = client.events[-1].at if client.events else 0.0
        quiet = time.monotonic() - max(last, client.turns[-1].first_audio_at if client.turns else 0)
        if client.turns and client.turns[-1].ended and quiet > SETTLE_SECS:
            return
        await client.silence(0.256)


async def _print_events(client: RTVIClient, as_json: bool) -> None:
    shown_events = shown_turns = 0
    start = time.monotonic()

    def news() -> bool:
        return len(client.events) > shown_events or len(client.turns) > shown_turns

    while True:
        await client.wait_until(news, timeout=3600)
        for turn in client.turns[shown_turns:]:
            if turn.latency is not None:
                ms = round(turn.latency * 1000)
                _emit({"type": "latency", "ms": ms}, as_json, f"response latency: {ms} ms")
        for event in client.events[shown_events:]:
            _print_event(event, start, as_json)
        shown_events, shown_turns = len(client.events), len(client.turns)
        if client.closed:
            return


def _print_event(event: Event, start: float, as_json: bool) -> None:
    if as_json:
        _emit({"type": event.type, "t": round(event.at - start, 3), "data": event.data}, True, "")
    elif text := describe(event):
        print(f"[{event.at - start:6.2f}s] {text}", flush=True)


def _emit(payload: dict[str, object], as_json: bool, text: str) -> None:
    print(json.dumps(payload) if as_json else text, flush=True)


def summary(result: TalkResult) -> str:
    if not result.latencies:
        return "no response latency measured"
    ms = [latency * 1000 for latency in result.latencies]
    return f"{len(ms)} answer(s); response latency median {statistics.median(ms):.0f} ms"
