"""Hold a speculative answer's audio until the user's turn really ends.

The transcript strategy (turn_taking.py) starts answering as soon as the words say the
sentence is complete, while it still waits out the pause: Pipecat's speculative inference
(``LLMContextFrame.speculation``). Pipecat holds such an answer in the LLM service's own
``SpeculationGate``, which holds the answer's *text*: the TTS would only start once the turn
is confirmed, and the echo responder is no LLM service and would speak it at once. Here the
same ``SpeculationGate`` sits between the TTS and the output transport instead, so the answer
is generated and synthesized during the wait and only its audio waits: the turn's end
(``UserStoppedSpeakingFrame``) releases it; a withdrawal (``EagerEndOfTurnCancelFrame``, when
the user speaks again or the transcript changes) discards it.

``SpeculationMarker`` (before the responder) brackets each speculative inference with two
in-band frames, which the responder and the TTS pass on in order with the answer between
them. ``HeldSpeechGate`` (after the TTS) thus learns that an answer is speculative just ahead
of it, as the gate asks (``begin_speculation`` when the inference starts), and can drop an
answer withdrawn before any of it came: the strategy has at most one speculation in flight
and withdraws each at most once, so a withdrawal that finds no speculation here is for the
next bracket to arrive. The marker also clears the context frame's ``speculation`` flag, so
an LLM responder's own gate lets the text through to the TTS.

A withdrawn answer is still generated and synthesized to its end (its output dropped here):
the responder is not stopped mid-answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipecat.frames.frames import (
    ControlFrame,
    EagerEndOfTurnCancelFrame,
    Frame,
    LLMContextFrame,
    SystemFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.turns.speculation_gate import SpeculationGate

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
    responder."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not (isinstance(frame, LLMContextFrame) and frame.speculation):
            await self.push_frame(frame, direction)
            return
        await self.push_frame(SpeculativeAnswerStartFrame(), direction)
        # Held after the TTS, not in the responder; the same frame (not a copy), so that
        # observers see it once.
        frame.speculation = False
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
            self._bracket_open = self._dropping = False
        elif self._dropping and self._drops(frame, direction):
            return
        else:
            if isinstance(frame, EagerEndOfTurnCancelFrame):
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
