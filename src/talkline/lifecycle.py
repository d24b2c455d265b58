"""A session's life in names: the states it passes through and the reasons it ends.

Each ``EndReason`` carries the label the client is told (the RTVI ``session-ending``
message's ``reason``, the close reason's first word, the ``reason`` label of
``talkline_sessions_ended_total``), the WebSocket close code, and the words a user reads.
"""

from __future__ import annotations

from enum import Enum

from starlette import status


class SessionState(Enum):
    """Where a session is in its life; it only moves forward."""

    AWAITING_CLIENT_READY = "awaiting-client-ready"  # admitted, pipeline running
    ACTIVE = "active"  # the client sent client-ready: a conversation
    ENDING = "ending"  # told why, closing; input is ignored
    CLOSED = "closed"


class EndReason(Enum):
    """Why a session ended: label, close code, and the words the client is told."""

    CLIENT_DISCONNECTED = ("client-disconnected", status.WS_1000_NORMAL_CLOSURE, "")
    SESSION_TIMEOUT = (
        "session-timeout",
        status.WS_1000_NORMAL_CLOSURE,
        "The session reached its {minutes:g} minute limit.",
    )
    IDLE_TIMEOUT = (
        "idle-timeout",
        status.WS_1000_NORMAL_CLOSURE,
        "Nothing was said for {minutes:g} minutes, so the session was closed.",
    )
    NO_CLIENT_READY = (
        "no-client-ready",
        status.WS_1008_POLICY_VIOLATION,
        "No client-ready within {seconds:g} s.",
    )
    POLICY_VIOLATION = ("policy-violation", status.WS_1008_POLICY_VIOLATION, "{problem}")
    CLIENT_NOT_READING = (
        "client-not-reading",
        status.WS_1008_POLICY_VIOLATION,
        "the client stopped reading",
    )
    UPSTREAM_ERROR = ("upstream-error", status.WS_1011_INTERNAL_ERROR, "{problem}")
    SERVER_SHUTDOWN = (
        "server-shutdown",
        status.WS_1001_GOING_AWAY,
        "The server is shutting down; this session ends after the current answer.",
    )
    INTERNAL_ERROR = ("internal-error", status.WS_1011_INTERNAL_ERROR, "internal error")
    # Resume: the conversation goes on elsewhere.
    SESSION_MOVING = (
        "session-moving",
        status.WS_1012_SERVICE_RESTART,
        "The server is restarting; resume the conversation on another server.",
    )
    TAKEN_OVER = (
        "taken-over",
        status.WS_1008_POLICY_VIOLATION,
        "This conversation was resumed on another connection.",
    )

    def __init__(self, label: str, close_code: int, words: str):
        self.label = label
        self.close_code = close_code
        self.words = words

    def message(self, **facts: object) -> str:
        """The words for the client, with this session's facts filled in."""
        return self.words.format(**facts)

    def close_reason(self, message: str) -> str:
        """The WebSocket close reason: the label, then the words (at most 123 bytes)."""
        return f"{self.label}: {message}"[:123]


# A label only the session history uses: a session its replica never closed because the
# replica died (kill -9, power loss). The replica marks them so when it starts again; no live
# session ends this way, so it is not an ``EndReason``.
SERVER_LOST = "server-lost"
END_REASON_LABELS: tuple[str, ...] = (*(reason.label for reason in EndReason), SERVER_LOST)
