"""The compose stack keeps a conversation through the loss of a replica.

Usage: python deploy/container/stack_smoke.py http://127.0.0.1:8000 ENGINE
A client talks through HAProxy; the replica serving it is killed (`ENGINE kill`); the client
resumes through HAProxy on another replica and is answered again. Exits 0 when it was.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from talkline.audio import piper_speech, silence
from talkline.client_resume import ResumingRTVIClient

ANSWER_TIMEOUT_SECS = 60.0


async def answered(client: ResumingRTVIClient, pcm: bytes, answers: int) -> None:
    await client.stream(pcm)
    deadline = time.monotonic() + ANSWER_TIMEOUT_SECS
    while len(client.of_type("bot-stopped-speaking")) < answers:
        if time.monotonic() > deadline:
            raise SystemExit(f"stack: no answer {answers}: {[e.type for e in client.events]}")
        await client.silence(0.256)


def container_of(engine: str, replica: str) -> str:
    names = subprocess.run(
        [engine, "ps", "--format", "{{.Names}}"], capture_output=True, text=True, check=True
    ).stdout.split()
    return next(name for name in names if replica in name)


async def converse(base: str, engine: str) -> int:
    speech = piper_speech("What is the weather like in Paris today?") + silence(0.5)
    client = ResumingRTVIClient(base.replace("http://", "ws://") + "/ws")
    await client.connect()
    try:
        ready = await client.client_ready()
        first = str(ready.data["about"]["replica"])
        await answered(client, speech, 1)
        victim = container_of(engine, first)
        print(f"stack: answered by {first}; killing its container {victim}")
        killed = time.monotonic()
        subprocess.run([engine, "kill", victim], check=True, capture_output=True)
        while not client.of_type("reconnected"):
            if client.closed or time.monotonic() - killed > ANSWER_TIMEOUT_SECS:
                print(f"stack: FAILED: did not resume: {[e.type for e in client.events]}")
                return 1
            await client.silence(0.128)
        about = client.of_type("reconnected")[-1].data["about"]
        gap = time.monotonic() - killed
        print(f"stack: resumed on {about.get('replica')} {gap:.1f} s after the kill")
        await answered(client, speech, 2)
        if about.get("replica") == first or about.get("session_id") != ready.data["about"].get(
            "session_id"
        ):
            print(f"stack: FAILED: not the same conversation on another replica: {about}")
            return 1
        print("stack: the conversation went on on another replica: passed")
        return 0
    finally:
        await client.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(converse(sys.argv[1].rstrip("/"), sys.argv[2])))
