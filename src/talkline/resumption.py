"""One session's tie to the resume registry: its secret, its epoch, and how it ends.

A session becomes resumable once the client is ready: the registry gets its entry (or, for
a resumed session, already holds it, claimed by ``/ws``) and the client gets a
``session-resumable`` message with a fresh secret. While the session runs, the link keeps
the entry alive and stores each newest Gemini handle, both fenced by the epoch: when a
write is refused another connection has taken over, and the session is closed. When the
session ends, a normal close (1000) or any ending the server chose forgets the
conversation; an unexpected close or a hand-off leaves it for the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loguru import logger
from starlette import status

from talkline.auth import Access
from talkline.coordinator.resume import (
    Conversation,
    Hold,
    RedisResumeRegistry,
    ResumeRegistry,
    Transcript,
    new_secret,
    secret_hash,
)
from talkline.lifecycle import EndReason

KEEP_ALIVE_MAX_SECS = 15.0


@dataclass
class Resumed:
    """What ``/ws`` claimed for a resumed session: the conversation and its new secret."""

    conversation: Conversation
    secret: str


def keep_alive_interval(window: float) -> float:
    """A few keep-alives per window, so one missed beat does not lose the conversation."""
    return max(0.5, min(KEEP_ALIVE_MAX_SECS, window / 4))


class ResumeLink:
    """Keeps one session's registry entry: created at client-ready, fenced by epoch."""

    def __init__(
        self,
        registry: ResumeRegistry,
        session_id: str,
        owner: str,
        key_id: str,
        resumed: Resumed | None = None,
    ):
        self.registry = registry
        self.session_id = session_id
        self.owner = owner
        self.key_id = key_id
        self.resumed = resumed
        conversation = resumed.conversation if resumed else None
        self.started = conversation.started if conversation else time.time()
        self.epoch = conversation.epoch if conversation else 0
        self.registered = resumed is not None
        self.secret_hash = conversation.secret_hash if conversation else ""
        self._handle, self._transcript = self.handle, list(self.transcript)
        self.on_fenced: Callable[[], None] = lambda: None
        self.last_active: Callable[[], float] = time.time  # the session tells when
        # someone last spoke; a resume's idle timeout counts from it
        self._beat: asyncio.Task[None] | None = None

    @property
    def handle(self) -> str:
        return self.resumed.conversation.handle if self.resumed else ""

    @property
    def transcript(self) -> Transcript:
        return self.resumed.conversation.transcript if self.resumed else []

    async def open(self) -> dict[str, Any]:
        """Register (a new session) and start the keep-alive; the ``session-resumable``
        message for the client, with the secret only it will see."""
        if self.resumed is not None:
            secret = self.resumed.secret
        else:
            secret = new_secret(self.session_id)
            conversation = Conversation(
                self.session_id, self.owner, secret_hash(secret), self.key_id, self.started
            )
            await self.registry.create(conversation)
            self.epoch, self.registered = conversation.epoch, True
            self.secret_hash = conversation.secret_hash
        self._beat = asyncio.create_task(self._keep_alive(), name=f"resume-{self.session_id}")
        return {
            "type": "session-resumable",
            "session_id": self.session_id,
            "resume": secret,
            "window_secs": self.registry.window,
        }

    async def _keep_alive(self) -> None:
        interval = keep_alive_interval(self.registry.window)
        while True:
            await asyncio.sleep(interval)
            try:
                hold = await self.registry.keep_alive(
                    self.session_id, self.epoch, self.last_active()
                )
                if hold is Hold.LOST:
                    await self._write_anew()
            except Exception as error:  # the registry's trouble must not end the session
                logger.warning(f"resume registry unreachable: {error!r}")
                continue
            if hold is Hold.FENCED:
                self._fenced()
                return

    async def store(self, handle: str, transcript: Transcript) -> None:
        """The newest Gemini handle; a refused write means another owner took over."""
        if not self.registered:
            return
        self._handle, self._transcript = handle, list(transcript)
        try:
            hold = await self.registry.store(self.session_id, self.epoch, handle, transcript)
            if hold is Hold.LOST:
                await self._write_anew()
        except Exception as error:
            logger.warning(f"could not store the resumption handle: {error!r}")
            return
        if hold is Hold.FENCED:
            self._fenced()

    async def _write_anew(self) -> None:
        """The registry forgot this live conversation (Redis restarted empty): this owner,
        at its epoch, writes it again, so it stays resumable."""
        logger.warning("the resume registry lost this conversation; writing it again")
        conversation = Conversation(
            self.session_id,
            self.owner,
            self.secret_hash,
            self.key_id,
            self.started,
            self.epoch,
            self._handle,
            self._transcript,
            self.last_active(),
        )
        await self.registry.create(conversation)

    def _fenced(self) -> None:
        logger.warning("this conversation was resumed elsewhere; closing this connection")
        self.on_fenced()

    async def finish(self, reason: EndReason, client_code: int | None) -> bool:
        """Forget the conversation or leave it resumable; True when left resumable."""
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
        if not self.registered or reason is EndReason.TAKEN_OVER:
            return False
        unexpected = (
            reason is EndReason.CLIENT_DISCONNECTED and client_code != status.WS_1000_NORMAL_CLOSURE
        )
        if unexpected or reason is EndReason.SESSION_MOVING:
            with contextlib.suppress(Exception):  # when someone last spoke, for the resume
                await self.registry.keep_alive(self.session_id, self.epoch, self.last_active())
            return True
        with contextlib.suppress(Exception):
            await self.registry.end(self.session_id, self.epoch)
        return False


SIGNING_KEY_REFRESH_SECS = 10.0  # a Redis restarted empty gets one key again this soon


async def share_signing_key(registry: RedisResumeRegistry, access: Access) -> None:
    """Keep ``access`` signing resume tokens with the key all replicas on ``registry``'s
    Redis share (when no ``TALKLINE_TOKEN_SECRET`` does it). Runs until cancelled."""
    while True:
        try:
            access.resume_secret = await registry.signing_key()
            delay = SIGNING_KEY_REFRESH_SECS
        except Exception as error:  # Redis away: keep the key we have, ask again soon
            logger.warning(f"resume signing key unavailable: {error!r}")
            delay = 1.0
        await asyncio.sleep(delay)
