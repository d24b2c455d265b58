"""Text to speech through the Piper HTTP server that ``PiperProcess`` runs.

Pipecat has a ``PiperHttpTTSService``, but its module imports the ``piper`` package
(GPL-3.0) at import time for its in-process sibling, which would load GPL code into
talkline's MIT process. This service speaks the same HTTP API and imports nothing of
Piper's: ``POST /synthesize {"text", "voice"}`` answers with a WAV file.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import aiohttp
from pipecat.frames.frames import ErrorFrame, Frame, TTSStoppedFrame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService

from talkline.services.spoken_answer import AnswerSpeechTTSService

CHUNK_BYTES = 4800  # 100 ms at 24 kHz

# --- Pipecat internals this module relies on -----------------------------------------------
# Private names of Pipecat's TTSService that PiperHttpTTSService calls or reads, with why;
# tests/test_pipecat_contract.py checks each against the installed Pipecat.
# (owner, name, kind, why); kind is "override", "calls" or "reads" (reads or writes).
PIPECAT_PRIVATE: tuple[tuple[type, str, str, str], ...] = (
    (TTSService, "_settings", "reads", "the voice to ask Piper for"),
    (TTSService, "_stream_audio_frames_from_iterator", "calls", "WAV bytes to audio frames"),
)


class PiperHttpTTSService(AnswerSpeechTTSService):
    """Streams the WAV that Piper's HTTP server returns, as audio frames; speaks an LLM's
    answer in whole sentences of plain words (see spoken_answer.py)."""

    def __init__(self, *, base_url: str, voice: str, http: aiohttp.ClientSession, **kwargs):
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model=None, voice=voice, language=None),
            **kwargs,
        )
        self._synthesize_url = f"{base_url.rstrip('/')}/synthesize"
        self._http = http

    def can_generate_metrics(self) -> bool:
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        payload = {"text": text, "voice": self._settings.voice}
        try:
            async with self._http.post(self._synthesize_url, json=payload) as response:
                if response.status != 200:
                    detail = (await response.text())[:200]
                    yield ErrorFrame(f"Speech synthesis failed ({response.status}): {detail}")
                    yield TTSStoppedFrame(context_id=context_id)
                    return
                await self.start_tts_usage_metrics(text)
                async for frame in self._stream_audio_frames_from_iterator(
                    response.content.iter_chunked(CHUNK_BYTES),
                    strip_wav_header=True,
                    context_id=context_id,
                ):
                    await self.stop_ttfb_metrics()
                    yield frame
        except aiohttp.ClientError as error:
            yield ErrorFrame(f"Speech synthesis is unavailable right now: {error}")
            yield TTSStoppedFrame(context_id=context_id)
        finally:
            await self.stop_ttfb_metrics()
