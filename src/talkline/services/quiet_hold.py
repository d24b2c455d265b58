"""Quiet the Gemini brain does not send: the upstream pauses while the user says nothing.

A microphone streams all the time, and most of a conversation's audio is the user being
quiet: listening to the answer, thinking. Relaying every 32 ms of it to Gemini costs a
message through base64, JSON, a WebSocket frame and a TLS record in the server, and a parse
at Gemini, which also counts every second it hears as input tokens in the session's context.

``QuietHold`` stops sending once the speech gate has scored ``after_secs`` of windows in a
row with nothing that could be speech (Silero confidence under ``QUIET_CONFIDENCE``, looser
than the VAD's own start; windows with a peak under the gate's ``SILENCE_PEAK``, about
-44 dBFS, are not scored and count as quiet), and tells Gemini the stream paused
(``audioStreamEnd``: the SDK's documented way to say the microphone's audio stopped; sending
audio again reopens the stream).
Meanwhile it keeps the newest ``PREROLL_SECS`` of audio (and the newest chunk whole). At the
first window that might be speech it sends that and the chunk in hand as one message, and
then the stream is live again: Gemini hears each utterance whole, from before its start,
and the user's end of speech as it happens.

The gate scores a chunk just after the chunk went on (it is pushed before the VAD looks at
it), so the stream resumes with the chunk after the first speech-like one: the start of an
utterance reaches Gemini one client chunk late (32 ms for the page's chunks) plus the batch
wait, and later still if Silero needs several windows to score a soft start above 0.3; its
end arrives on time.
"""

from __future__ import annotations

import math
from typing import Protocol

PREROLL_SECS = 1.0  # audio kept while holding, sent when the stream resumes


class QuietSource(Protocol):
    """What the hold reads: how many windows in a row had nothing like speech in them."""

    quiet_windows: int


class QuietHold:
    """Decides, chunk by chunk, what of the user's audio goes upstream now."""

    def __init__(
        self,
        gate: QuietSource,
        *,
        after_secs: float,
        window_secs: float,
        preroll_bytes: int,
    ):
        self._gate = gate
        self._after_windows = max(1, math.ceil(after_secs / window_secs - 1e-9))
        self._preroll = bytearray()
        self._preroll_limit = preroll_bytes
        self.holding = False
        self.pauses = 0  # times the stream paused
        self._dropped = 0  # quiet audio that fell out of the preroll

    @property
    def unsent_bytes(self) -> int:
        """Quiet audio not sent: what fell out of the preroll, and the preroll itself."""
        return self._dropped + len(self._preroll)

    def admit(self, audio: bytes) -> tuple[bytes, bool]:
        """What to send now for ``audio`` (empty while holding), and whether the stream
        pauses with this chunk (tell Gemini: ``audioStreamEnd``)."""
        if self._gate.quiet_windows >= self._after_windows:
            pausing = not self.holding
            if pausing:
                self.holding = True
                self.pauses += 1
            self._preroll += audio
            # The newest chunk is kept whole, however long (a client may send up to 2 s at
            # once): the first speech-like window may be anywhere in it.
            overflow = len(self._preroll) - max(self._preroll_limit, len(audio))
            if overflow > 0:
                del self._preroll[:overflow]
                self._dropped += overflow
            return b"", pausing
        if self.holding:
            self.holding = False
            audio = bytes(self._preroll) + audio
            self._preroll.clear()
        return audio, False
