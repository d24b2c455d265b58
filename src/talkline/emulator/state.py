"""Settings and state shared by all connections of one emulator."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.protocol import State

from .faults import Fault
from .records import Recorder
from .wire import DEFAULT_MODELS, OUTPUT_RATE

MAX_CHUNK_BYTES = 32 * 1024


@dataclass
class EmulatorConfig:
    """Behaviour knobs; they may be changed while the emulator runs.

    valid_keys: accepted API keys; None accepts any key (a missing key is still refused).
    models: accepted model names without `models/`; None accepts any.
    response_delay: seconds between the end of a user turn and the first reply audio.
    reply_seconds: length of each spoken reply.
    pace: wall-clock seconds spent per second of reply audio; 1.0 is real time, 0 is instant.
    chunk_bytes: reply audio bytes per message (at most 32 KiB).
    vad_threshold: RMS level of a voiced 20 ms frame of user audio.
    speech_start_ms: voiced audio needed before speech counts as started.
    silence_ms: quiet audio that ends a turn (setup's silence_duration_ms overrides it).
    transcript: fixed inputTranscription text; None sends "turn N".
    reply_text: fixed outputTranscription text; None sends "reply N".
    record_messages: keep every parsed client message in the connection record.
    handle_lifetime: seconds a resumption handle is accepted after it was issued (the real
        service documents hours); a setup with an older one is refused "session not found".
    """

    valid_keys: frozenset[str] | None = None
    models: frozenset[str] | None = DEFAULT_MODELS
    response_delay: float = 0.0
    reply_seconds: float = 1.2
    pace: float = 1.0
    chunk_bytes: int = int(OUTPUT_RATE * 2 * 0.2)
    vad_threshold: float = 500.0
    speech_start_ms: float = 100.0
    silence_ms: float = 500.0
    transcript: str | None = None
    reply_text: str | None = None
    record_messages: bool = True
    handle_lifetime: float = 2 * 3600.0

    def __post_init__(self) -> None:
        if not 2 <= self.chunk_bytes <= MAX_CHUNK_BYTES:
            raise ValueError(f"chunk_bytes must be between 2 and {MAX_CHUNK_BYTES}")


@dataclass
class Conversation:
    """What a resumption handle brings back: the conversation's turn counter."""

    id: int
    turns: int = 0
    serving: Any = None  # the LiveConnection serving it now, if any


@dataclass
class Shared:
    """Everything the connections of one emulator share."""

    config: EmulatorConfig
    recorder: Recorder = field(default_factory=Recorder)
    faults: list[Fault] = field(default_factory=list)
    handles: dict[str, Conversation] = field(default_factory=dict)
    issued: dict[str, float] = field(default_factory=dict)  # handle -> monotonic time
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def new_conversation(self) -> Conversation:
        """Start a fresh conversation."""
        return Conversation(next(self._ids) + 1)

    def issue_handle(self, conversation: Conversation) -> str:
        """Make a resumption handle that brings `conversation` back."""
        handle = f"emu-{conversation.id}-{conversation.turns}-{len(self.handles)}"
        self.handles[handle] = conversation
        self.issued[handle] = time.monotonic()
        return handle

    def handle_refusal(self, handle: str) -> str | None:
        """Why ``handle`` cannot resume now, or None.

        Unknown or older than ``handle_lifetime``: not found. Still served by an open
        connection: refused too, with the same code and words, so a client that presents
        a handle while the old connection lives on starts a fresh session (seeded) rather
        than sharing one conversation between two connections."""
        conversation = self.handles.get(handle)
        if conversation is None:
            return "unknown handle"
        if time.monotonic() - self.issued[handle] > self.config.handle_lifetime:
            return "handle expired"
        serving = conversation.serving
        if serving is not None and serving.ws.state is State.OPEN:
            return "conversation still open on another connection"
        return None
