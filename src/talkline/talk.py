"""``talkline talk WAV``: speak a WAV file to a talkline server and report what came back."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from talkline.audio import WavAudio, write_wav
from talkline.client import Event, RTVIClient
from talkline.client_resume import ResumingRTVIClient

SETTLE_SECS = 1.5  # quiet time after the bot's last answer before hanging up
WS_SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}


class ServerAddressError(ValueError):
    """``--url`` names no server talkline talk can reach."""


def server_url(text: str) -> str:
    """The /ws address for ``--url``: a ws(s):// URL as given, or the address the page is
    served at (``http://host:5000``, ``https://…``, ``host:5000``) turned into its /ws."""
    parts = urlsplit(text.strip() if "://" in text else f"http://{text.strip()}")
    scheme = WS_SCHEMES.get(parts.scheme)
    if scheme is None or not parts.hostname:
        raise ServerAddressError(
            f"{text!r} is not a server address: give http://host:5000 or ws://host:5000/ws"
        )
    path = parts.path.rstrip("/")
    page_address = parts.scheme in ("http", "https") or not path
    if page_address and not path.endswith("/ws"):
        path += "/ws"  # where the page's server takes sessions
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


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
        case "server-message" if data.get("type") == "session-resumable":
            return None  # the secret is for the client, not for the screen
        case "server-message":
            return f"server: {data.get('message', data)}"
        case "closed":
            return f"connection closed ({data.get('code')})"
        case "reconnecting":
            return "reconnecting…"
        case "reconnected":
            gap = data.get("gap_secs", 0)
            return (
                "reconnected: the conversation continues "
                f"({gap:g} s of audio sent during the gap was not heard)"
            )
        case "resume-failed":
            reason = data.get("error")
            return "could not resume the conversation" + (f" ({reason})" if reason else "")
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
    client = ResumingRTVIClient(url, sample_rate=audio.rate, channels=audio.channels)
    async with client:
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
        data = event.data | ({"resume": "<secret>"} if "resume" in event.data else {})
        _emit({"type": event.type, "t": round(event.at - start, 3), "data": data}, True, "")
    elif text := describe(event):
        print(f"[{event.at - start:6.2f}s] {text}", flush=True)


def _emit(payload: dict[str, object], as_json: bool, text: str) -> None:
    print(json.dumps(payload) if as_json else text, flush=True)


def summary(result: TalkResult) -> str:
    if not result.latencies:
        return "no response latency measured"
    ms = [latency * 1000 for latency in result.latencies]
    return f"{len(ms)} answer(s); response latency median {statistics.median(ms):.0f} ms"
