"""Why a session is not admitted: the ``Refusal`` labels, a ``Decision`` with its words.

Admission and both coordinators (``talkline.coordinator``) answer with these, so every door
(``/ready``, ``/connect``, ``/ws``) tells the client the same thing with the same codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from starlette import status


class Refusal(Enum):
    """Why a session is not admitted: its label, WebSocket close code and HTTP status."""

    STARTING = ("server-starting", status.WS_1013_TRY_AGAIN_LATER, 503)
    START_FAILED = ("start-failed", status.WS_1011_INTERNAL_ERROR, 503)
    SHUTTING_DOWN = ("server-shutting-down", status.WS_1013_TRY_AGAIN_LATER, 503)
    FULL = ("server-full", status.WS_1013_TRY_AGAIN_LATER, 503)
    ADDRESS_FULL = ("address-full", status.WS_1013_TRY_AGAIN_LATER, 429)
    KEY_FULL = ("key-full", status.WS_1013_TRY_AGAIN_LATER, 429)
    COORDINATOR_UNAVAILABLE = ("coordinator-unavailable", status.WS_1013_TRY_AGAIN_LATER, 503)

    def __init__(self, label: str, ws_code: int, http_status: int):
        self.label = label
        self.ws_code = ws_code
        self.http_status = http_status


@dataclass(frozen=True)
class Decision:
    """A refusal with the words the client is told."""

    refusal: Refusal
    reason: str

    @property
    def ws_code(self) -> int:
        return self.refusal.ws_code

    @property
    def http_status(self) -> int:
        return self.refusal.http_status


class AdmissionRefused(Exception):
    """A session was not admitted; ``decision`` says why and with which codes."""

    def __init__(self, decision: Decision):
        super().__init__(decision.reason)
        self.decision = decision


@dataclass(frozen=True)
class Caps:
    """How many sessions may hold a lease at once: in all, per client address, per API key."""

    total: int
    per_client: int
    per_key: int

    def decision(self, refusal: Refusal) -> Decision:
        """The words for a cap ``refusal`` (``FULL``, ``ADDRESS_FULL`` or ``KEY_FULL``)."""
        if refusal is Refusal.ADDRESS_FULL:
            reason = f"too many sessions from your address ({self.per_client} at most)"
        elif refusal is Refusal.KEY_FULL:
            reason = f"too many sessions for your API key ({self.per_key} at most)"
        else:
            reason = f"server full: all {self.total} session slots are in use, try again later"
        return Decision(refusal, reason)


UNAVAILABLE = Decision(
    Refusal.COORDINATOR_UNAVAILABLE,
    "session coordinator unavailable: new sessions cannot start now, try again soon",
)
