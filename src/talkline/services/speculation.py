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
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipecat.frames.frames import (
    ControlFrame,
    EagerEndOfTurnCancelFrame,
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    SystemFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.turns.speculation_gate import SpeculationGate, SpeculationState

DOWNSTREAM = FrameDirection.DOWNSTREAM


@dataclass
class SpeculativeAnswerStartFrame(ControlFrame):
    """What follows (up to ``SpeculativeAnswerEndFrame``) answers a turn not yet ended.
    Uninterruptible, like its end: an interruption never leaves a bracket half-delivered."""

    interruptible: bool = field(default=False, init=False)


@dataclass
class SpeculativeAnswerEndFrame(ControlFrame):
    """The end of a speculative answer's bracket."""

    interruptible: bool = field(default=False, init=False)


class SpeculationMarker(FrameProcessor):
    """Brackets each speculative inference for ``HeldSpeechGate``; goes before the
    responder. ``responder_holds``: the responder holds speculative answers itself (an LLM
    service); else the context frame's flag is cleared, as the responder would not heed it."""

    def __init__(self, *, responder_holds: bool, **kwargs):
        super().__init__(**kwargs)
        self._responder_holds = responder_holds

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not (
            isinstance(frame, LLMContextFrame) and frame.speculation and direction is DOWNSTREAM
        ):
            await self.push_frame(frame, direction)
            return
        await self.push_frame(SpeculativeAnswerStartFrame(), direction)
        # The same frame, not a copy, so that observers see it once.
        frame.speculation = self._responder_holds
        await self.push_frame(frame, direction)
        await self.push_frame(SpeculativeAnswerEndFrame(), direction)


class HeldSpeechGate(FrameProcessor):
    """Pipecat's ``SpeculationGate`` hosted after the TTS: holds a speculative answer's
    frames (audio included) until the turn ends, drops them if it is withdrawn."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._gate = SpeculationGate(name=f"{self}::SpeculationGate")
        self._withdrawn_ahead = 0  # withdrawals for brackets that have not come yet
        self._bracket_open = False
        self._dropping = False  # inside a bracket withdrawn before its answer came

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, SpeculativeAnswerStartFrame):
            self._open_bracket()
        elif isinstance(frame, SpeculativeAnswerEndFrame):
            self._close_bracket()
        elif self._dropping and self._drops(frame, direction):
            return
        else:
            if isinstance(frame, EagerEndOfTurnCancelFrame) and direction is DOWNSTREAM:
                self._withdraw()
            for gated, gated_direction in self._gate.process(frame, direction):
                await self.push_frame(gated, gated_direction)

    def _open_bracket(self) -> None:
        self._bracket_open = True
        if self._withdrawn_ahead:
            self._withdrawn_ahead -= 1
            self._dropping = True
        else:
            self._gate.begin_speculation(True)

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
