"""A loopback emulator of the Gemini Live API (BidiGenerateContent) for tests and benchmarks.

The real google-genai SDK connects to it unpatched over TLS; see `GeminiEmulator`.
"""

from .cli import main, serve_forever
from .faults import Fault, FaultKind
from .records import ConnectionRecord, TurnRecord
from .server import GeminiEmulator
from .state import EmulatorConfig
from .wire import DEFAULT_MODELS

__all__ = [
    "DEFAULT_MODELS",
    "ConnectionRecord",
    "EmulatorConfig",
    "Fault",
    "FaultKind",
    "GeminiEmulator",
    "TurnRecord",
    "main",
    "serve_forever",
]
