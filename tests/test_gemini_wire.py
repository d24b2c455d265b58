"""The audio messages talkline writes on the Live session's socket are the SDK's own."""

from __future__ import annotations

from google.genai._api_client import BaseApiClient
from google.genai.live import AsyncSession
from google.genai.types import Blob

from talkline.services.gemini import AUDIO_STREAM_END, realtime_audio_message


class CapturingSocket:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, message: str) -> None:
        self.sent.append(message)


async def test_audio_message_is_what_the_sdk_sends() -> None:
    """Byte for byte, for odd sizes (base64 padding) and both rates; fails on an SDK change."""
    socket = CapturingSocket()
    session = AsyncSession(api_client=BaseApiClient(api_key="key"), websocket=socket)  # type: ignore[arg-type]
    for audio, rate in [
        (b"\x01", 16000),
        (b"\x00\xff" * 512, 16000),
        (bytes(range(256)) * 3, 24000),
    ]:
        await session.send_realtime_input(
            audio=Blob(data=audio, mime_type=f"audio/pcm;rate={rate}")
        )
        assert realtime_audio_message(audio, rate) == socket.sent[-1]


async def test_audio_stream_end_is_what_the_sdk_sends() -> None:
    socket = CapturingSocket()
    session = AsyncSession(api_client=BaseApiClient(api_key="key"), websocket=socket)  # type: ignore[arg-type]
    await session.send_realtime_input(audio_stream_end=True)
    assert socket.sent == [AUDIO_STREAM_END]
