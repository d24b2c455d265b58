"""The web page in a real browser: Debian's Chromium, a fake microphone playing Piper speech."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, ConsoleMessage, Error, Page, async_playwright

from talkline.audio import piper_speech, silence, write_wav
from talkline.client import RTVIClient
from talkline.emulator import GeminiEmulator
from tests.support import ServerThread, running_gemini_server, running_server, words

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "build" / "screenshots"
ANSWER_TIMEOUT_MS = 60_000
CONNECT_TIMEOUT_MS = 30_000
# Silence after the question in the looping mic file, so the bot can answer uninterrupted.
MIC_TAIL_SECS = 15.0
PHONE = {"width": 375, "height": 740}
QUESTION = "What is the weather like in Paris today?"
# Long, so its echoed answer (about 6 s) is still playing when the next question starts.
STORY = (
    "Please tell me a long story about a green dragon who lives in the mountains "
    "and guards a treasure."
)
LAST_QUESTION = "What time is it in Tokyo?"
# Silence after the first question of the barge-in mic file: time to answer it in full.
ANSWERED_GAP_SECS = 8.0
# Silence after the story request: longer than the server takes to start answering it,
# shorter than that answer.
BARGE_IN_GAP_SECS = 5.0
# How far the page's end of speech may fall after the server VAD's: it counts any chunk at
# speech level, Silero may call the last quiet tens of ms of a word silence.
SPEECH_END_SLACK_MS = 100
# Run in each page before its own script: records every moment a bot message shows a
# latency badge but no words (a MutationObserver sees the page after each change).
WORDLESS_BADGE_WATCH = """
window.wordlessBadges = [];
new MutationObserver(() => {
  for (const msg of document.querySelectorAll('[data-testid="bot-message"]')) {
    const badge = msg.querySelector('[data-testid="latency"]');
    const text = msg.querySelector('[data-testid="message-text"]')?.textContent.trim();
    if (badge && !text) window.wordlessBadges.push(badge.textContent);
  }
}).observe(document, { subtree: true, childList: true, characterData: true });
"""


def by_id(test_id: str) -> str:
    return f'[data-testid="{test_id}"]'


def write_mic_wav(path: Path, pcm: bytes) -> Path:
    """16 kHz 16-bit mono PCM as a WAV file, for Chromium to loop as its microphone."""
    write_wav(path, pcm, 16000)
    return path


@pytest.fixture(scope="module")
def mic_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The question, then silence."""
    folder = tmp_path_factory.mktemp("mic")
    speech = piper_speech(QUESTION, save=folder / "weather.wav")
    return write_mic_wav(folder / "mic.wav", speech + silence(MIC_TAIL_SECS))


@contextlib.asynccontextmanager
async def chromium_with_mic(mic: Path) -> AsyncIterator[Browser]:
    """A headless Chromium whose microphone plays ``mic`` in a loop."""
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={mic}",
            ],
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(mic_wav: Path) -> AsyncIterator[Browser]:
    """One Chromium for the module, with the question as its microphone."""
    async with chromium_with_mic(mic_wav) as chromium:
        yield chromium


class Watched:
    """A fresh page with what it logged as errors and every URL it requested."""

    def __init__(self, page: Page):
        self.page = page
        self.errors: list[str] = []
        self.requests: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        page.on("request", lambda request: self.requests.append(request.url))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text} ({message.location.get('url')})")

    async def events(self) -> list[str]:
        return list(await self.page.evaluate("window.talklineEvents.map(e => e.type)"))

    async def wait_for_event(self, kind: str, timeout: float = ANSWER_TIMEOUT_MS) -> None:
        try:
            await self.page.wait_for_function(
                "kind => window.talklineEvents.some(e => e.type === kind)",
                arg=kind,
                timeout=timeout,
            )
        except Error as error:
            raise AssertionError(f"no {kind}; events: {await self.events()}") from error


@pytest_asyncio.fixture(loop_scope="module")
async def watched(browser: Browser) -> AsyncIterator[Watched]:
    context = await browser.new_context()
    await context.add_init_script(WORDLESS_BADGE_WATCH)
    try:
        yield Watched(await context.new_page())
    finally:
        await context.close()


async def connect(watched: Watched, url: str) -> None:
    page = watched.page
    await page.goto(url + "/")
    await page.click(by_id("connect-button"))


async def wait_connected(watched: Watched) -> None:
    status = watched.page.locator(f'{by_id("status")}[data-state="connected"]')
    await status.wait_for(timeout=CONNECT_TIMEOUT_MS)


async def wait_for_answer(watched: Watched) -> None:
    """Until the bot has finished speaking its answer and it shows in the conversation."""
    await watched.wait_for_event("bot-stopped-speaking")
    page = watched.page
    await page.locator(by_id("user-message")).first.wait_for(timeout=ANSWER_TIMEOUT_MS)
    await page.locator(by_id("bot-message")).first.wait_for(timeout=ANSWER_TIMEOUT_MS)


async def screenshot(page: Page, name: str, tmp_path: Path) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / name), full_page=True)
    await page.screenshot(path=str(tmp_path / name), full_page=True)


async def page_load_bytes(page: Page) -> int:
    """Body bytes of the document and everything it loaded, as the browser measured them."""
    return int(
        await page.evaluate(
            """[...performance.getEntriesByType('navigation'),
                ...performance.getEntriesByType('resource')]
               .reduce((sum, e) => sum + e.encodedBodySize, 0)"""
        )
    )


async def test_page_talks_with_the_offline_brain(
    server: ServerThread, watched: Watched, tmp_path: Path
) -> None:
    """Connect, speak into the fake mic, see the transcript, the spoken answer and its latency."""
    page = watched.page
    await connect(watched, server.http_url)
    await wait_connected(watched)
    brain = page.locator(by_id("brain"))
    assert await brain.get_attribute("data-brain") == "local"
    assert "echo" in await brain.inner_text()

    await wait_for_answer(watched)
    # Whisper tiny.en sometimes hears Piper's "Paris" as "pairs": two of three words will do.
    user_message = page.locator(by_id("user-message")).first
    heard = words(await user_message.locator(by_id("message-text")).inner_text())
    assert len({"weather", "like", "today"} & heard) >= 2, heard
    bot_message = page.locator(by_id("bot-message")).first
    bot_text = bot_message.locator(by_id("message-text")).filter(has_text="You said")
    await bot_text.wait_for()
    assert heard <= words(await bot_text.inner_text())  # the echo brain says it back
    latency = bot_message.locator(by_id("latency"))
    await latency.wait_for()
    assert int(await latency.get_attribute("data-ms") or "-1") >= 0
    assert "Response latency" in await page.locator(by_id("latency-summary")).inner_text()
    assert await page.evaluate("window.wordlessBadges") == []

    events = await watched.events()
    for kind in ("bot-ready", "bot-started-speaking", "bot-stopped-speaking", "turn-latency"):
        assert kind in events, events
    assert "client-error" not in events and "socket-closed" not in events, events

    # Everything the page needs comes from talkline itself: no CDN, works offline.
    assert all(url.startswith((server.http_url, "data:")) for url in watched.requests), (
        watched.requests
    )
    assert await page_load_bytes(page) < 1_000_000
    await screenshot(page, "web-client.png", tmp_path)

    await page.click(by_id("disconnect-button"))
    await page.locator(f'{by_id("status")}[data-state="idle"]').wait_for(timeout=10_000)
    assert await page.locator(by_id("connect-button")).is_visible()
    assert await page.locator(by_id("error-banner")).is_hidden()
    assert watched.errors == []


async def test_page_fits_a_phone_screen(
    server: ServerThread, watched: Watched, tmp_path: Path
) -> None:
    """At 375 px wide, idle and mid-conversation, the page needs no horizontal scrolling."""
    page = watched.page
    await page.set_viewport_size(PHONE)  # type: ignore[arg-type]
    await page.goto(server.http_url + "/")
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

    await page.click(by_id("connect-button"))
    await wait_connected(watched)
    await wait_for_answer(watched)
    await page.locator(by_id("latency")).first.wait_for()
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    await screenshot(page, "web-client-phone.png", tmp_path)
    await page.click(by_id("disconnect-button"))
    await page.locator(f'{by_id("status")}[data-state="idle"]').wait_for(timeout=10_000)
    assert watched.errors == []


@pytest.fixture(scope="module")
def one_session_server() -> Iterator[ServerThread]:
    with running_server(max_sessions=1) as running:
        yield running


async def test_page_explains_a_full_server(
    one_session_server: ServerThread, watched: Watched
) -> None:
    """When the only session is taken, the page says in plain words that the server is full."""
    page = watched.page
    async with RTVIClient(one_session_server.ws_url) as holder:
        await holder.client_ready()
        await connect(watched, one_session_server.http_url)
        banner = page.locator(by_id("error-banner"))
        await banner.wait_for(timeout=CONNECT_TIMEOUT_MS)
        text = (await banner.inner_text()).lower()
        # Today /ws closes with 1013 and "server full: ..."; a /connect that answered 503
        # would make the page say the server is busy: both are plain words for "full".
        assert "server is full" in text or "server is busy" in text, text
        assert await banner.get_attribute("data-kind") == "error"
        await page.locator(f'{by_id("status")}[data-state="idle"]').wait_for(timeout=10_000)
        assert await page.locator(by_id("connect-button")).is_visible()
        assert "bot-ready" not in await watched.events()
        assert not holder.closed

    # Allowed: Chromium's own "Failed to load resource" line for a refused request (as a
    # 503 from /connect would give); the banner explains it. Nothing else.
    unexpected = [e for e in watched.errors if "Failed to load resource" not in e]
    assert unexpected == []


async def test_page_talks_with_the_gemini_brain(watched: Watched, tmp_path: Path) -> None:
    """The same page against the Gemini brain (the emulator behind the real SDK)."""
    async with GeminiEmulator(response_delay=0.1, reply_seconds=1.0) as emu:
        with running_gemini_server(emu) as server:
            page = watched.page
            await connect(watched, server.http_url)
            await wait_connected(watched)
            brain = page.locator(by_id("brain"))
            assert await brain.get_attribute("data-brain") == "gemini"
            await wait_for_answer(watched)
            user_text = page.locator(by_id("user-message")).first.locator(by_id("message-text"))
            assert "turn 1" in await user_text.inner_text()
            bot_text = page.locator(by_id("bot-message")).first.locator(by_id("message-text"))
            await bot_text.filter(has_text="reply 1").wait_for(timeout=ANSWER_TIMEOUT_MS)
            await screenshot(page, "web-client-gemini.png", tmp_path)
            await page.click(by_id("disconnect-button"))
    assert emu.audio_bytes > 0
    assert watched.errors == []


def page_event(events: list[dict[str, Any]], kind: str, *, after: int = -1) -> int:
    """The time (ms) of the first ``kind`` event later than ``after``."""
    times = [e["t"] for e in events if e["type"] == kind and e["t"] > after]
    assert times, [e["type"] for e in events]
    return int(times[0])


async def test_latency_counts_from_the_end_of_speech(
    server: ServerThread, watched: Watched
) -> None:
    """The badge includes the server's wait for silence, which its user-stopped-speaking hides.

    The server says the user stopped only after its VAD heard ``vad_stop_secs`` of silence
    (then the turn model and often Whisper): timed from that event, the badge would leave
    all of it out. So the badge exceeds the event-to-event interval by at least that wait.
    """
    page = watched.page
    await connect(watched, server.http_url)
    await wait_connected(watched)
    await wait_for_answer(watched)
    badge = page.locator(by_id("bot-message")).first.locator(by_id("latency"))
    await badge.wait_for()
    badge_ms = int(await badge.get_attribute("data-ms") or "-1")

    events = await page.evaluate("window.talklineEvents")
    user_started = page_event(events, "user-started-speaking")
    stopped = page_event(events, "user-stopped-speaking", after=user_started)
    started = page_event(events, "bot-started-speaking", after=stopped)
    turn = next(e["data"] for e in events if e["type"] == "turn-latency")
    vad_stop_ms = server.settings.vad_stop_secs * 1000
    # The interval starts in the speech the server heard begin, at least the VAD's wait
    # before the server said it ended, and ends when the bot is heard, after that.
    assert user_started < turn["speech_end"] <= stopped - vad_stop_ms + SPEECH_END_SLACK_MS, (
        user_started,
        turn,
        stopped,
    )
    assert turn["heard"] > stopped, (turn, stopped)
    assert abs(badge_ms - (turn["heard"] - turn["speech_end"])) <= 1, (badge_ms, turn)
    floor = started - stopped + vad_stop_ms - SPEECH_END_SLACK_MS
    assert badge_ms >= floor, (badge_ms, started - stopped)
    await page.click(by_id("disconnect-button"))
    assert watched.errors == []


@pytest.fixture(scope="module")
def barge_in_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A question answered in full, then the story request, cut off by a last question."""
    folder = tmp_path_factory.mktemp("barge-in")
    question = piper_speech(QUESTION, save=folder / "question.wav", tail=0.0)
    story = piper_speech(STORY, save=folder / "story.wav", lead=0.0, tail=0.0)
    last = piper_speech(LAST_QUESTION, save=folder / "last.wav", lead=0.0)
    pcm = b"".join(
        [
            question,
            silence(ANSWERED_GAP_SECS),
            story,
            silence(BARGE_IN_GAP_SECS),
            last,
            silence(MIC_TAIL_SECS),
        ]
    )
    return write_mic_wav(folder / "mic.wav", pcm)


async def test_an_interrupted_answer_says_so(server: ServerThread, barge_in_wav: Path) -> None:
    """Speaking over an answer marks it "interrupted"; no bubble shows a latency without words.

    The answer cut off comes after one spoken in full, as in a real conversation: Pipecat
    sends an answer's bot-output only once it is spoken, so the cut-off one never gets any.
    """
    async with chromium_with_mic(barge_in_wav) as chromium:
        context = await chromium.new_context()
        await context.add_init_script(WORDLESS_BADGE_WATCH)
        watched = Watched(await context.new_page())
        page = watched.page
        await connect(watched, server.http_url)
        await wait_connected(watched)
        await page.wait_for_function(
            "window.talklineEvents.filter(e => e.type === 'bot-stopped-speaking').length >= 3",
            timeout=3 * ANSWER_TIMEOUT_MS,
        )
        bot_messages = page.locator(by_id("bot-message"))
        assert await bot_messages.count() == 3
        assert await page.evaluate("window.wordlessBadges") == []
        for message in await bot_messages.all():
            if await message.locator(by_id("latency")).count():
                assert (await message.locator(by_id("message-text")).inner_text()).strip()
        answered, cut_off, last = await bot_messages.all()
        assert "dragon" in words(await cut_off.locator(by_id("message-text")).inner_text())
        assert "interrupted" in await cut_off.inner_text()
        assert await cut_off.locator(by_id("interrupted")).inner_text() == "interrupted"
        for message in (answered, last):
            assert await message.locator(by_id("interrupted")).count() == 0
            await message.locator(by_id("latency")).wait_for()
        await page.click(by_id("disconnect-button"))
        await context.close()
    assert watched.errors == []
