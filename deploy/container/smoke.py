"""Speak one sentence to a running talkline (the container image) and check the answer.

Usage: python deploy/container/smoke.py http://127.0.0.1:PORT
Exits 0 when the server heard the sentence and answered it out loud, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.error
import urllib.request

from talkline.audio import piper_speech
from talkline.client import RTVIClient

SENTENCE = "What is the weather like in Paris today?"
READY_TIMEOUT_SECS = 180.0  # the first start loads the models
ANSWER_TIMEOUT_SECS = 60.0


def wait_ready(base: str) -> dict[str, object]:
    deadline = time.monotonic() + READY_TIMEOUT_SECS
    while True:
        try:
            with urllib.request.urlopen(f"{base}/ready", timeout=3):
                break
        except (urllib.error.URLError, ConnectionError, OSError) as error:
            if time.monotonic() > deadline:
                raise SystemExit(f"smoke: {base}/ready never answered 200: {error}") from error
            time.sleep(1)
    with urllib.request.urlopen(f"{base}/health", timeout=3) as reply:
        return dict(json.load(reply))


async def converse(base: str) -> tuple[str, str, int]:
    ws_url = base.replace("http://", "ws://") + "/ws"
    speech = piper_speech(SENTENCE)
    async with RTVIClient(ws_url) as client:
        await client.client_ready()
        await client.stream(speech)
        deadline = time.monotonic() + ANSWER_TIMEOUT_SECS
        while not client.of_type("bot-stopped-speaking") and time.monotonic() < deadline:
            await client.silence(0.256)
        heard = " ".join(
            e.data["text"] for e in client.of_type("user-transcription") if e.data.get("final")
        )
        said = " ".join(e.data.get("text", "") for e in client.of_type("bot-tts-text"))
        return heard, said, len(client.bot_audio)


def main() -> int:
    base = sys.argv[1].rstrip("/")
    health = wait_ready(base)
    print(f"smoke: ready; /health says {health}")
    heard, said, audio_bytes = asyncio.run(converse(base))
    print(f"smoke: heard {heard!r}; answered {said!r} with {audio_bytes} bytes of audio")
    if "weather" not in heard.lower() or not said or audio_bytes == 0:
        print("smoke: FAILED: the sentence was not heard, or not answered out loud")
        return 1
    print("smoke: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
