"""An RTVI client that resumes its conversation on its own after an unexpected close.

After ``bot-ready`` the server offers a resume secret (``session-resumable``). When the
socket then closes with 1006, 1001, 1012, or 1011 without a fatal error, the client POSTs
the secret to ``/connect`` and opens the socket it is given, with backoff, until the
resume window is over. Never after 1000 (a normal close), 1008 (a policy close, or the
conversation taken over elsewhere) or a fatal error. Audio sent while it is away is not
heard by anyone: it is counted in ``gap_secs`` and said so.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from talkline.client import RTVI_VERSION, Event, RTVIClient, rtvi_message

RESUME_CODES = frozenset({1001, 1006, 1011, 1012})
BACKOFF_SECS = (0.1, 0.25, 0.5, 1.0, 2.0)
CONNECT_TIMEOUT_SECS = 10.0  # one /connect call (aiohttp waits 300 s by default)


class ResumeFailed(Exception):
    """``/connect`` would not resume: ``status`` 410 (window over), 403, or another."""

    def __init__(self, status: int, error: str):
        super().__init__(f"{status}: {error}")
        self.status = status


def resumable(client: RTVIClient) -> dict[str, Any] | None:
    """The newest ``session-resumable`` message the server sent this client, if any."""
    found = [e.data for e in client.of_type("server-message")]
    return next((d for d in reversed(found) if d.get("type") == "session-resumable"), None)


def http_base(ws_url: str) -> str:
    """The server's HTTP base for a ``ws://host/ws`` URL."""
    scheme, _, rest = ws_url.partition("://")
    host = rest.split("/", 1)[0]
    return f"{'https' if scheme == 'wss' else 'http'}://{host}"


async def resume_url(http_url: str, secret: str, api_key: str | None = None) -> str:
    """POST the resume secret to ``/connect``; the /ws URL (with its token) to resume on."""
    import aiohttp  # a server dependency; only resuming clients need it

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CONNECT_TIMEOUT_SECS)) as http,
        http.post(f"{http_url}/connect", json={"resume": secret}, headers=headers) as reply,
    ):
        body = await reply.json(content_type=None)
        if reply.status != 200:
            raise ResumeFailed(reply.status, str(body.get("error", body)))
    return f"{body['ws_url']}?token={body['token']}"


def should_resume(client: RTVIClient, code: int | None) -> bool:
    """After an unexpected close with a resume offer; not after a fatal error, nor when
    the server ended the session on purpose (``session-ending``: timeouts, shutdown)."""
    fatal = any(e.data.get("fatal") for e in client.of_type("error"))
    messages = [e.data.get("type") for e in client.of_type("server-message")]
    if code not in RESUME_CODES or (code == 1011 and fatal) or "session-ending" in messages:
        return False
    return resumable(client) is not None


class ResumingRTVIClient(RTVIClient):
    """``RTVIClient`` that comes back by itself; ``closed`` only once it has given up."""

    def __init__(self, url: str, *, api_key: str | None = None, **options: Any):
        super().__init__(url, **options)
        self.api_key = api_key
        self.resumes = 0
        self.gap_secs = 0.0  # audio sent while away, never heard
        self.resuming = False  # away, trying to come back
        self._resuming: asyncio.Task[None] | None = None
        self._closing = False  # close() was called: never come back after it

    @property
    def closed(self) -> bool:
        return self.close_code is not None and not self.resuming

    def _on_closed(self) -> None:
        if not self._closing and not self.resuming and should_resume(self, self.close_code):
            self.resuming = True
            self._resuming = asyncio.create_task(self._resume(), name="rtvi-client-resume")

    async def send_audio(self, pcm: bytes) -> None:
        if self.close_code is None:
            try:
                await super().send_audio(pcm)
                return
            except ConnectionClosed:  # closed before the reader saw it
                pass
        self.gap_secs += len(pcm) / self.bytes_per_second  # away: nobody hears this

    async def _resume(self) -> None:
        offer = resumable(self)
        assert offer is not None
        deadline = time.monotonic() + float(offer.get("window_secs", 0))
        await self._record(Event("reconnecting", time.monotonic(), {"code": self.close_code}))
        attempt = 0
        last_error = ""
        while time.monotonic() < deadline:
            offer = resumable(self) or offer  # a server that took an attempt sent a new secret
            try:
                url = await resume_url(http_base(self.url), offer["resume"], self.api_key)
                await self._reopen(url)
                return
            except ResumeFailed as failed:
                last_error = str(failed)
                if failed.status in (403, 410):
                    break
            except Exception as error:  # any other trouble on the way back: try again
                # (aiohttp's ServerDisconnectedError, websockets' ConnectionClosed... are not
                # OSErrors; one that ended this task left ``resuming`` set, and whoever
                # waited for ``closed`` waited forever.)
                last_error = type(error).__name__  # its text may hold the /ws token
            await asyncio.sleep(BACKOFF_SECS[min(attempt, len(BACKOFF_SECS) - 1)])
            attempt += 1
        self.resuming = False
        await self._record(Event("resume-failed", time.monotonic(), {"error": last_error}))

    async def _reopen(self, url: str) -> None:
        seen = len(self.events)
        ws = self._ws = await connect(url, max_size=2**22, open_timeout=10)
        self.close_code, self.close_reason = None, ""
        reader = self._reader = asyncio.create_task(self._read(), name="rtvi-client-reader")
        ready = rtvi_message(
            "client-ready", {"version": RTVI_VERSION, "about": {"library": "talk"}}
        )
        try:
            await self.send_message(ready)
            bot_ready = await self._bot_ready_on_this_socket(seen)
        except BaseException:  # this attempt is over: its socket and reader go with it
            self.close_code = self.close_code or 1006
            self._ws = None
            # "Going away", not a normal close: the server may already have moved the
            # conversation onto this socket, and 1000 would end it for the next attempt too.
            # Unless the user is leaving (close() cancelled the attempt): then it ends.
            await ws.close(1000 if self._closing else 1001, "resume attempt abandoned")
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            raise
        self.resumes += 1
        self.resuming = False
        data = {"about": bot_ready.data.get("about", {}), "gap_secs": round(self.gap_secs, 2)}
        await self._record(Event("reconnected", time.monotonic(), data))

    async def _bot_ready_on_this_socket(self, seen: int) -> Event:
        """``bot-ready`` after event ``seen``; an error as soon as this socket closes (``closed``
        stays False while resuming, so ``wait_for`` would wait out its whole timeout)."""

        await self.wait_until(
            lambda: self.first("bot-ready", seen) is not None or self.close_code is not None
        )
        found = self.first("bot-ready", seen)
        if found is None or self.close_code is not None:  # refused, or gone right after
            raise ConnectionError(f"closed ({self.close_code}) before the session resumed")
        return found

    async def close(self) -> None:
        # A close that ends abnormally (no close frame back within websockets' timeout: 1006)
        # must not start a resume: ``closed`` would stay False and whoever waits for it wait
        # until the resume window is over.
        self._closing = True
        if self._resuming is not None:
            self._resuming.cancel()
            await asyncio.gather(self._resuming, return_exceptions=True)
        self.resuming = False
        await super().close()
