"""talkline: a self-hosted real-time voice AI server speaking RTVI over WebSocket."""

__version__ = "0.1.0"
