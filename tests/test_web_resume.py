"""The web page resumes by itself in a real browser when its connection drops."""

from __future__ import annotations

from pathlib import Path

import pytest

from talkline.audio import piper_speech, silence
from talkline.emulator import GeminiEmulator
from tests.support import running_gemini_server
from tests.test_talk_resume import CuttableProxy
from tests.test_web_client import by_id, chromium_with_mic, write_mic_wav

TIMEOUT_MS = 60_000


def events_of(kind: str) -> str:
    return f"window.talklineEvents.filter(e => e.type === '{kind}').length"


@pytest.mark.asyncio(loop_scope="function")
async def test_page_reconnects_and_the_conversation_continues(tmp_path: Path) -> None:
    """The socket drops after the first answer: the page says "Reconnecting…", resumes,
    says "Reconnected: the conversation continues" and that audio in the gap was not heard,
    and the next question is answered as turn 2 of the same Gemini conversation."""
    speech = piper_speech("What is the weather like in Paris today?", save=tmp_path / "q.wav")
    mic = write_mic_wav(tmp_path / "mic.wav", speech + silence(4.0))
    async with (
        GeminiEmulator(reply_seconds=0.8, response_delay=0.1) as emulator,
        chromium_with_mic(mic) as chromium,
    ):
        with running_gemini_server(emulator) as server:
            async with CuttableProxy(server.port).running() as proxy:
                page = await chromium.new_page()
                await page.goto(f"http://127.0.0.1:{proxy.port}/")
                await page.click(by_id("connect-button"))
                await page.wait_for_function(
                    f"{events_of('bot-stopped-speaking')} >= 1", timeout=TIMEOUT_MS
                )
                proxy.cut()
                await page.wait_for_function(f"{events_of('reconnected')} >= 1", timeout=TIMEOUT_MS)
                banner = await page.text_content(by_id("error-banner"))
                await page.wait_for_function(
                    f"{events_of('bot-stopped-speaking')} >= 2", timeout=TIMEOUT_MS
                )
                kinds = await page.evaluate("window.talklineEvents.map(e => e.type)")
                about = await page.evaluate(
                    "window.talklineEvents.find(e => e.type === 'reconnected').data.about"
                )
                await page.close()

    assert kinds.index("socket-closed") < kinds.index("reconnecting") < kinds.index("reconnected")
    assert banner is not None and banner.startswith("Reconnected: the conversation continues.")
    assert "was not heard" in banner
    assert about["resumed"] is True
    last = emulator.connections[-1]
    assert last.resumed_handle is not None
    assert last.conversation == emulator.connections[0].conversation
    assert [t.number for t in last.turns][:1] == [2], "turn 2 of the same conversation"
