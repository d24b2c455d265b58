"""The web page's History view in a real browser: the last sessions, each with its transcript."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser

from talkline.audio import silence
from tests.history_support import session_row, turn_row, write
from tests.support import running_doors
from tests.test_web_client import Watched, by_id, chromium_with_mic, write_mic_wav

pytestmark = pytest.mark.asyncio(loop_scope="module")
KEY = "hk-web-77d1"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Browser]:
    mic = write_mic_wav(tmp_path_factory.mktemp("mic") / "quiet.wav", silence(1.0))
    async with chromium_with_mic(mic) as chromium:
        yield chromium


@pytest_asyncio.fixture(loop_scope="module")
async def watched(browser: Browser) -> AsyncIterator[Watched]:
    context = await browser.new_context()
    try:
        yield Watched(await context.new_page())
    finally:
        await context.close()


def past_conversation() -> tuple[dict[str, object], tuple[dict[str, object], ...]]:
    row = session_row("cut-off", end_reason="client-disconnected", turns=1, duration_secs=9.0)
    bot = turn_row("cut-off", 2, "Once upon a") | {"role": "bot", "interrupted": True}
    return row, (turn_row("cut-off", 1, "Tell me a story"), bot | {"latency_ms": 640.0})


async def test_history_view_lists_sessions_and_opens_a_transcript(
    watched: Watched, tmp_path: Path
) -> None:
    """Open History: the session is listed with its end reason; a click shows what was said."""
    row, turns = past_conversation()
    with running_doors(data_dir=tmp_path) as server:
        write(server, row, turns=turns)
        page = watched.page
        await page.goto(server.http_url + "/")
        await page.click(f"{by_id('history')} summary")
        session = page.locator(by_id("history-session"))
        await session.first.wait_for(timeout=10_000)
        assert "client-disconnected" in await session.first.inner_text()
        await session.first.locator("button").click()
        transcript = session.first.locator(by_id("history-transcript"))
        await transcript.locator("li").nth(1).wait_for(timeout=10_000)
        said = await transcript.inner_text()
    assert "Tell me a story" in said and "Once upon a" in said
    assert "interrupted" in said and "640 ms" in said
    assert watched.errors == []


async def test_history_view_asks_for_an_api_key_when_access_is_on(
    watched: Watched, tmp_path: Path
) -> None:
    """With access on, the view asks for a key, then lists the sessions."""
    row, turns = past_conversation()
    with running_doors(data_dir=tmp_path, api_keys=KEY, token_secret="sig") as server:
        write(server, row, turns=turns)
        page = watched.page
        await page.goto(server.http_url + "/")
        await page.click(f"{by_id('history')} summary")
        form = page.locator(by_id("history-key-form"))
        await form.wait_for(state="visible", timeout=10_000)
        assert "API key" in await page.locator(by_id("history-status")).inner_text()
        await page.fill(by_id("history-key"), KEY)
        await form.locator("button").click()
        await page.locator(by_id("history-session")).first.wait_for(timeout=10_000)
        assert await form.is_hidden()
    assert [e for e in watched.errors if "401" not in e] == []
