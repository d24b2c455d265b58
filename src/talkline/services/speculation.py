"""Hold a speculative answer's audio until the user's turn really ends.

The transcript strategy (turn_taking.py) starts answering as soon as the words say the
sentence is complete, while it still waits out the pause: Pipecat's speculative inference
(``LLMContextFrame.speculation``). Pipecat holds such an answer in the LLM service's own
``SpeculationGate``, and only there: the echo responder is no LLM service and would speak it
at once, and an LLM's gate holds the answer's *text*, so Piper could only start once the turn
is confirmed. Here the same ``SpeculationGate`` also sits between the TTS and the output
transport, so the echo responder's answer is synthesized during the wait and only its audio
waits: the turn's end (``UserStoppedSpeakingFrame``) releases it; a withdrawal
(``EagerEndOfTurnCancelFrame``, when the user speaks again or the transcript changes)
discards it.

An LLM responder keeps Pipecat's own hold on its text (``responder_holds``): on a withdrawal
Pipecat then stops the generation, where an answer let through to the TTS would run to its
end (up to ``local_llm_max_tokens``) ahead of the answer to the whole turn. The LLM's time,
the larger part, is still spent during the wait; Piper's is not.

``SpeculationMarker`` (before the responder) brackets each speculative inference with two
in-band frames, which the responder and the TTS pass on in order with the answer between
them. ``HeldSpeechGate`` (after the TTS) thus learns that an answer is speculative just ahead
of it, as the gate asks (``begin_speculation`` when the inference starts), and can drop an
answer withdrawn before any of it came: the strategy has at most one speculation in flight
and withdraws each at most once, so a withdrawal that finds no speculation here is for the
next bracket to arrive. For the echo responder, a withdrawn answer is still synthesized to
its end (one short Piper request) and dropped here.

What the client is told follows what it hears. The responder and the TTS, ahead of the hold,
push an answer's ``LLMFullResponseStartFrame``, text and ``TTSStartedFrame`` before anyone
knows whether it will be spoken, and Pipecat's RTVI observer reports each frame at its first
push: a withdrawn answer showed as ``bot-llm-started``, ``bot-llm-text``,
``bot-transcription`` (the web page's "about to say" line) and ``bot-tts-started`` with no
speech after them. Each bracket is numbered; the gate pushes what became of each
(``SpeculativeAnswerVerdictFrame``, right after the frame that decided it, ahead of the
answer it releases), and ``HeldAnswerRTVIObserver`` holds those messages until then: sent
when the answer is released, in order with what the client is told of the turn, never when it
is withdrawn.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from pipecat.frames.frames import (
    ControlFrame,
    EagerEndOfTurnCancelFrame,
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    SystemFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import FramePushed
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.processors.frameworks.rtvi import RTVIObserver
from pipecat.turns.speculation_gate import SpeculationGate, SpeculationState

DOWNSTREAM = FrameDirection.DOWNSTREAM


@dataclass
class SpeculativeAnswerStartFrame(ControlFrame):
    """What follows (up to ``SpeculativeAnswerEndFrame``) answers a turn not yet ended.
    Uninterruptible, like its end: an interruption never leaves a bracket half-delivered.
    ``number``: the bracket's, counted by the marker from 1."""

    number: int = 0
    interruptible: bool = field(default=False, init=False)


@dataclass
class SpeculativeAnswerEndFrame(ControlFrame):
    """The end of a speculative answer's bracket."""

    number: int = 0
    interruptible: bool = field(default=False, init=False)


@dataclass
class SpeculativeAnswerVerdictFrame(SystemFrame):
    """What became of speculative answer ``number``: released (heard) or withdrawn."""

    number: int = 0
    released: bool = False


class SpeculationMarker(FrameProcessor):
    """Brackets each speculative inference for ``HeldSpeechGate``; goes before the
    responder. ``responder_holds``: the responder holds speculative answers itself (an LLM
    service); else the context frame's flag is cleared, as the responder would not heed it."""

    def __init__(self, *, responder_holds: bool, **kwargs):
        super().__init__(**kwargs)
        self._responder_holds = responder_holds
        self._numbers = itertools.count(1)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not (
            isinstance(frame, LLMContextFrame) and frame.speculation and direction is DOWNSTREAM
        ):
            await self.push_frame(frame, direction)
            return
        number = next(self._numbers)
        await self.push_frame(SpeculativeAnswerStartFrame(number=number), direction)
        # The same frame, not a copy, so that observers see it once.
        frame.speculation = self._responder_holds
        await self.push_frame(frame, direction)
        await self.push_frame(SpeculativeAnswerEndFrame(number=number), direction)


class HeldSpeechGate(FrameProcessor):
    """Pipecat's ``SpeculationGate`` hosted after the TTS: holds a speculative answer's
    frames (audio included) until the turn ends, drops them if it is withdrawn."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._gate = SpeculationGate(name=f"{self}::SpeculationGate")
        self._withdrawn_ahead = 0  # withdrawals for brackets that have not come yet
        self._bracket_open = False
        self._dropping = False  # inside a bracket withdrawn before its answer came
        self._pending = 0  # the bracket held awaiting its verdict (0: none)
        self._verdicts: list[Frame] = []  # verdicts to push

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        gated: list[tuple[Frame, FrameDirection]] = []
        if isinstance(frame, SpeculativeAnswerStartFrame):
            self._open_bracket(frame.number)
        elif isinstance(frame, SpeculativeAnswerEndFrame):
            self._close_bracket()
        elif self._dropping and self._drops(frame, direction):
            return
        else:
            if isinstance(frame, EagerEndOfTurnCancelFrame) and direction is DOWNSTREAM:
                self._withdraw()
            gated = self._gate.process(frame, direction)
            if self._pending and not self._gate.is_speculating:  # the turn settled it
                self._settle(self._pending, isinstance(frame, UserStoppedSpeakingFrame))
        # the frame that settled a verdict goes first, then the verdict, then what it released
        verdicts, self._verdicts = self._verdicts, []
        for frame_out, direction_out in gated[:1]:
            await self.push_frame(frame_out, direction_out)
        for verdict in verdicts:
            await self.push_frame(verdict, DOWNSTREAM)
        for frame_out, direction_out in gated[1:]:
            await self.push_frame(frame_out, direction_out)

    def _open_bracket(self, number: int) -> None:
        if self._pending:  # a new answer supersedes one still held
            self._settle(self._pending, False)
        self._bracket_open = True
        if self._withdrawn_ahead:
            self._withdrawn_ahead -= 1
            self._dropping = True
            self._settle(number, False)
        else:
            self._gate.begin_speculation(True)
            if self._gate.is_speculating:
                self._pending = number
            else:  # the turn is already over: nothing to hold
                self._settle(number, True)

    def _settle(self, number: int, released: bool) -> None:
        self._verdicts.append(SpeculativeAnswerVerdictFrame(number=number, released=released))
        if number == self._pending:
            self._pending = 0

    def _close_bracket(self) -> None:
        """The answer has come whole. If it was withdrawn while held, the gate dropped what
        it held and waits to drop the rest up to the answer's end, which this dropped
        instead: that end, so the gate drops nothing after the answer."""
        if self._dropping and self._gate.state is SpeculationState.DROPPING:
            self._gate.process(LLMFullResponseEndFrame(), DOWNSTREAM)
        self._bracket_open = self._dropping = False

    def _withdraw(self) -> None:
        """Before the gate discards what it holds: a withdrawal of an answer still to come."""
        if not self._gate.is_speculating:
            self._withdrawn_ahead += 1  # its bracket is still on the way
        elif self._bracket_open:
            self._dropping = True  # the rest of its bracket; the gate drops what it holds

    @staticmethod
    def _drops(frame: Frame, direction: FrameDirection) -> bool:
        """Whether a withdrawn answer's frame is dropped: not system frames, not frames that
        belong to no answer (uninterruptible), not upstream ones."""
        answer = frame.interruptible and not isinstance(frame, SystemFrame)
        return direction is DOWNSTREAM and answer


# What the RTVI observer reports of an answer before it is spoken (the rest, bot-output and
# bot-tts-text, it reports once the output transport has sent the words: after the hold).
ANSWER_FRAMES = (
    LLMFullResponseStartFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)


# Verdicts remembered for answer frames still on their way; brackets are numbered in order
# and an answer's frames all pass within a turn or two of its verdict.
KEPT_VERDICTS = 16


class HeldAnswerRTVIObserver(RTVIObserver):
    """Pipecat's RTVI observer, telling the client of a speculative answer only once it is
    released: an answer frame first pushed by a processor inside a bracket (between its
    ``SpeculativeAnswerStartFrame`` and ``SpeculativeAnswerEndFrame``) is reported when the
    gate's verdict releases that answer, held until the verdict comes, and never reported if
    the answer was withdrawn. Everything else is reported as Pipecat does."""

    def __init__(self, rtvi: Any = None, **kwargs: Any):
        super().__init__(rtvi, **kwargs)
        self._inside: dict[int, int] = {}  # id of a processor → the bracket it is pushing
        self._held: dict[int, list[FramePushed]] = {}  # bracket → its reports, undecided
        self._verdicts: dict[int, bool] = {}  # bracket → released, the newest few

    async def on_push_frame(self, data: FramePushed) -> None:
        frame, source = data.frame, id(data.source)
        if isinstance(frame, SpeculativeAnswerVerdictFrame):
            if data.first_push:
                await self._decided(frame.number, frame.released)
            return
        if isinstance(frame, SpeculativeAnswerStartFrame):
            self._inside[source] = frame.number
        elif isinstance(frame, SpeculativeAnswerEndFrame):
            self._inside.pop(source, None)
        number = self._inside.get(source)
        if number is None or not data.first_push or not isinstance(frame, ANSWER_FRAMES):
            await super().on_push_frame(data)
            return
        released = self._verdicts.get(number)
        if released is None:
            self._held.setdefault(number, []).append(data)
        elif released:
            await super().on_push_frame(data)

    async def _decided(self, number: int, released: bool) -> None:
        """A verdict: the answer's held reports are sent (released) or forgotten."""
        self._verdicts[number] = released
        if len(self._verdicts) > KEPT_VERDICTS:  # a long session's brackets are long over
            del self._verdicts[min(self._verdicts)]
        held = self._held.pop(number, [])
        if released:
            for data in held:
                await super().on_push_frame(data)
