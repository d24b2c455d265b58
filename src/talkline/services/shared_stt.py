"""What the offline recognizers (Whisper, Moonshine) share: one model per process, borrowed
by every session's service in a bounded slot, off the event loop, and segments cut where
the VAD heard the speech begin and end.

A recognizer's service mixes ``SharedModelSTT`` in before its Pipecat base and says, in
``transcribe``, how its shared model reads one utterance.

**Early transcription.** The VAD reports the end of speech only after ``stop_secs`` (0.2 s)
of silence, and the transcript, which the turn-taking strategy and the answer wait for, came
a recognizer's time after that. Once the VAD has heard ``early_secs`` of silence after speech
(its ``STOPPING`` state), the segment so far is transcribed at once; when the VAD then
reports the stop and the segment it cuts is that audio followed only by what the VAD did not
take for speech, the early transcript is the segment's, without a second run. Speech heard
again before the stop (the VAD back to ``SPEAKING``) throws the early transcript away: the
segment is transcribed whole when it ends, as before. The cost is the transcripts thrown
away, one per pause longer than ``early_secs`` and shorter than ``stop_secs`` inside an
utterance.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol

from loguru import logger
from pipecat.audio.vad.vad_analyzer import VADState
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    TranscriptionFrame,
    UserAudioRawFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.stt_service import SegmentedSTTService, STTService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

# --- Pipecat internals this module relies on -----------------------------------------------
# (owner, name, kind, why), checked by tests/test_pipecat_contract.py.
PIPECAT_PRIVATE: tuple[tuple[type, str, str, str], ...] = (
    (SegmentedSTTService, "_cancel_segment_task", "calls", "end the task with the pipeline"),
    (STTService, "_user_id", "reads", "the speaker of a transcription"),
    (SegmentedSTTService, "_audio_buffer", "reads", "the audio kept for the next segment"),
    (SegmentedSTTService, "_audio_buffer_size_1s", "reads", "the audio kept before speech"),
    (SegmentedSTTService, "_user_speaking", "reads", "whether a segment is open"),
    (SegmentedSTTService, "_handle_user_stopped_speaking", "override", "cut where the VAD was"),
    (SegmentedSTTService, "_trailing_silence", "calls", "pad an early segment as a late one"),
)

# Audio kept for a VAD that has fallen this far behind (a stalled pipeline); older goes.
MAX_UNHEARD_SECS = 30.0
MAX_CLAIMED = 4  # early transcripts of segments waiting to be transcribed (a backlog)


class ListeningPosition(Protocol):
    """How far into the session's audio the VAD after the recognizer has listened, and its
    state there."""

    analyzed_bytes: int
    state: VADState
    speech_runs: int  # how many times it has gone into SPEAKING


@dataclass
class EarlyTranscript:
    """A segment transcribed before the VAD reported its end: its speech, and the words."""

    speech: bytes
    speech_runs: int  # the VAD's, when it was started: speech heard since makes it stale
    words: asyncio.Task[str | None] | None = None  # None: failed, the stop's run is made
    running: bool = False  # it has its model slot (cancelling it would not stop the model)


class SharedModel(Protocol):
    """A process-wide model and the slots that bound its concurrency."""

    slots: asyncio.Semaphore


class SharedModelSTT(SegmentedSTTService):
    """Transcribes each utterance with the process's shared model, in one of its slots.

    Pipecat's segmented recognizer keeps the last second of audio until the VAD says the
    user started speaking, and cuts the segment when it says they stopped. The VAD runs in
    the user aggregator after this service, and its events come back upstream: when the
    audio arrives faster than the pipeline reads it (a client's network delivering a second
    or two at once, a stalled event loop), the start comes back after more than a second of
    the speech has passed and the segment loses its first words ("What is the weather like
    in Paris today?" heard as "Today."). Once it ``follow``s the VAD, this service keeps
    the audio the VAD has not yet heard and cuts each segment where the VAD was in the
    audio when it decided, so bursts lose nothing.
    """

    _shared: SharedModel
    _vad: ListeningPosition | None = None
    _received_bytes = 0
    _early_secs = 0.0  # silence heard before transcribing early (0: never)
    _stop_secs = 0.0  # the VAD's: the quiet after speech a segment cut at its stop ends with
    _quiet_from: int | None = None  # where the VAD was when it was first seen STOPPING
    _early: EarlyTranscript | None = None  # the current pause's
    _claimed: list[EarlyTranscript]  # those of ended segments, oldest first (follow sets it)

    def follow(
        self, vad: ListeningPosition, *, early_secs: float = 0.0, stop_secs: float = 0.0
    ) -> None:
        """Cut segments by ``vad``'s position in the audio (it hears every frame pushed on);
        transcribe a segment early once ``vad`` has heard ``early_secs`` of silence after
        speech (0: at its stop only; see the module's doc), padded with silence to the
        ``stop_secs`` of quiet its stop would have cut it after."""
        self._vad = vad
        self._claimed = []
        self._early_secs, self._stop_secs = early_secs, stop_secs  # seconds: the sample rate
        # is known only once the pipeline has started

    def transcribe(self, audio: bytes) -> str:
        """One utterance (16-bit PCM at ``self.sample_rate``) in words; runs on a thread."""
        raise NotImplementedError

    async def cleanup(self) -> None:
        # Pipecat's SegmentedSTTService starts its transcription task in start(); a session
        # cancelled before its StartFrame reached this service (a client that connects and
        # leaves at once) has cancel() run first, and the task started afterwards was left
        # running forever. Whatever the order, the task ends with the pipeline.
        await self._cancel_segment_task()
        for early in [*self._claimed, self._early] if self._vad is not None else []:
            if early is not None and early.words is not None:
                await self.cancel_task(early.words)
        await super().cleanup()

    async def process_audio_frame(self, frame: InputAudioRawFrame, direction: FrameDirection):
        if self._vad is None:
            await super().process_audio_frame(frame, direction)
            return
        self._user_id = frame.user_id if isinstance(frame, UserAudioRawFrame) else ""
        self._audio_buffer += frame.audio
        self._received_bytes += len(frame.audio)
        if not self._user_speaking:
            self._keep_unheard()
        elif self._early_secs > 0 and not self.wants_wav_segments:
            await self._maybe_transcribe_early()

    async def _maybe_transcribe_early(self) -> None:
        """Start the segment's transcript once the VAD has heard enough silence after the
        speech; drop one started before the VAD heard speech again."""
        assert self._vad is not None
        if self._vad.state != VADState.STOPPING:
            self._quiet_from = None
            if self._vad.state == VADState.SPEAKING:
                await self._drop_early()  # the user went on: not the segment's transcript
            return
        if self._quiet_from is None:
            self._quiet_from = self._vad.analyzed_bytes
        quiet = self._vad.analyzed_bytes - self._quiet_from
        if self._early is not None or quiet < int(self._early_secs * self.sample_rate) * 2:
            return
        heard = len(self._audio_buffer) - (self._received_bytes - self._vad.analyzed_bytes)
        speech = bytes(self._audio_buffer[: max(heard, 0)])
        # As long a quiet after the speech as the stop's segment would have: Moonshine ends a
        # sentence cut off sooner with a comma (the user is going on), not a full stop.
        missing = max(int(self._stop_secs * self.sample_rate) * 2 - quiet, 0)
        audio = speech + bytes(missing) + self._trailing_silence()
        early = EarlyTranscript(speech, self._vad.speech_runs)
        early.words = self.create_task(self._transcribe_early(audio, early), f"{self}::early")
        self._early = early
        logger.debug(f"{self}: transcribing {len(speech) / 2 / self.sample_rate:.2f} s early")

    async def _transcribe(self, audio: bytes) -> str:
        """``transcribe`` in one of the shared model's slots, off the event loop."""
        async with self._shared.slots:
            return await asyncio.to_thread(self.transcribe, audio)

    async def _drop_early(self) -> None:
        """Drop the current pause's early transcript; stop it if it still waits for a slot."""
        early, self._early = self._early, None
        if early is not None and early.words is not None and not early.running:
            await self.cancel_task(early.words)

    async def _transcribe_early(self, audio: bytes, early: EarlyTranscript) -> str | None:
        """An early transcript; None if the model failed (the stop's run says so, if again)."""
        try:
            async with self._shared.slots:
                early.running = True
                return await asyncio.to_thread(self.transcribe, audio)
        except Exception as error:
            logger.warning(f"{self}: early transcription failed ({error}), retried at the stop")
            return None

    async def _early_words(self, audio: bytes) -> str | None:
        """The words of the early transcript whose speech ``audio`` is, followed only by what
        the VAD did not take for speech; None when there is none or it failed. Older ones
        are dropped."""
        claimed = self._claimed if self._vad is not None else []  # follow() made the list
        for index, early in enumerate(claimed):
            if audio.startswith(early.speech) and early.words is not None:
                del self._claimed[: index + 1]
                logger.debug(f"{self}: the segment's transcript was made early")
                return await early.words
        return None

    def _keep_unheard(self) -> None:
        """Keep the audio the VAD has not heard, and a second of what it has heard."""
        assert self._vad is not None
        buffered_from = self._received_bytes - len(self._audio_buffer)
        keep_from = self._vad.analyzed_bytes - self._audio_buffer_size_1s
        limit = int(MAX_UNHEARD_SECS * self._audio_buffer_size_1s)
        drop = max(keep_from - buffered_from, len(self._audio_buffer) - limit, 0)
        del self._audio_buffer[: min(drop, len(self._audio_buffer))]

    async def _handle_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame):
        """The segment ends where the VAD was when it decided; later audio stays for the next."""
        if self._vad is None:
            await super()._handle_user_stopped_speaking(frame)
            return
        unheard = self._received_bytes - self._vad.analyzed_bytes
        cut = min(max(len(self._audio_buffer) - unheard, 0), len(self._audio_buffer))
        later = bytes(self._audio_buffer[cut:])
        del self._audio_buffer[cut:]
        if self._early is not None and self._early.speech_runs != self._vad.speech_runs:
            await self._drop_early()  # speech the recognizer did not see in time (a burst)
        if self._early is not None:  # the segment's own, whatever the VAD hears next
            self._claimed = [*self._claimed, self._early][-MAX_CLAIMED:]
            self._early = None
        await super()._handle_user_stopped_speaking(frame)  # transcribes and clears the buffer
        self._audio_buffer += later
        self._quiet_from = None
        self._keep_unheard()

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        """Transcribe one utterance in a shared slot; a failure is an error frame, not a crash."""
        await self.start_processing_metrics()
        try:
            text = await self._early_words(audio)
            if text is None:
                text = await self._transcribe(audio)
        except Exception as error:  # a broken model must not end the session
            logger.exception("transcription failed")
            yield ErrorFrame(f"Speech recognition failed: {error}")
            return
        finally:
            await self.stop_processing_metrics()
        if text:
            logger.debug(f"Transcription: [{text}]")
            yield TranscriptionFrame(text, self._user_id, time_now_iso8601(), Language.EN)
