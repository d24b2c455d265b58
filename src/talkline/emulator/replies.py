"""The emulator's answer to one user turn: transcripts, paced audio, turnComplete."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from . import wire
from .audio import chunks, reply_voice
from .records import TurnRecord
from .state import MAX_CHUNK_BYTES

if TYPE_CHECKING:
    from .connection import LiveConnection

TOKENS_PER_SECOND = 25


class Reply:
    """Sends the reply to `turn` over `session`; cancelled when the user barges in."""

    def __init__(self, session: LiveConnection, turn: TurnRecord) -> None:
        self.session = session
        self.turn = turn
        self.config = session.config
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Send the whole reply, stopping early if a fault says so."""
        session, number = self.session, self.turn.number
        if self.turn.source in ("audio", "activity") and session.wants("input_audio_transcription"):
            text = self.config.transcript or f"turn {number}"
            await session.send(wire.server_content(inputTranscription={"text": text}))
        await asyncio.sleep(self.config.response_delay)
        if session.text_mode():
            await self._send_text()
        elif not await self._send_audio():
            return
        if session.wants("output_audio_transcription") and not session.text_mode():
            text = self.config.reply_text or f"reply {number}"
            await session.send(wire.server_content(outputTranscription={"text": text}))
        await session.send(wire.server_content(generationComplete=True))
        await session.send(wire.turn_complete(*self._usage()))
        self.turn.completed_at = time.monotonic()
        await session.turn_done(self.turn)

    async def _send_text(self) -> None:
        """TEXT modality: the reply as text parts, a few words at a time."""
        text = self.config.reply_text or f"This is reply {self.turn.number}."
        words = text.split(" ")
        for start in range(0, len(words), 2):
            piece = " ".join(words[start : start + 2]) + (" " if start + 2 < len(words) else "")
            data = wire.frame(wire.server_content(modelTurn={"parts": [{"text": piece}]}))
            if self.turn.first_audio_at is None:
                self.turn.first_audio_at = time.monotonic()
            await self.session.send_frame(data)

    async def _send_audio(self) -> bool:
        size = min(self.config.chunk_bytes, MAX_CHUNK_BYTES)
        pieces = chunks(reply_voice(self.config.reply_seconds), size)
        started = time.monotonic()
        sent_seconds = 0.0
        for count, piece in enumerate(pieces, start=1):
            data = wire.frame(wire.audio_part(piece))
            # Stamped once the message is built (encoding it is the emulator's work, not the
            # server's) and before it is written (so it cannot be heard before its stamp).
            if self.turn.first_audio_at is None:
                self.turn.first_audio_at = time.monotonic()
            await self.session.send_frame(data)
            self.turn.reply_chunks = count
            await self.session.shared.recorder.changed()
            if await self._chunk_faults(count):
                return False
            sent_seconds += len(piece) / (2 * wire.OUTPUT_RATE)
            await asyncio.sleep(
                max(0.0, started + sent_seconds * self.config.pace - time.monotonic())
            )
        return True

    async def _chunk_faults(self, count: int) -> bool:
        session = self.session
        stop = False
        for fault in session.shared.faults:
            if fault.matches_chunk(session.record.index, self.turn.number, count):
                stop = await session.fire(fault) or stop
        return stop

    def _usage(self) -> tuple[int, int]:
        heard = self.turn.user_audio_bytes / (2 * wire.INPUT_RATE)
        prompt = max(1, round(heard * TOKENS_PER_SECOND))
        return prompt, max(1, round(self.config.reply_seconds * TOKENS_PER_SECOND))
