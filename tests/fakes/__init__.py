"""Loopback fakes of outside providers that speak their real wire protocols.

Each is an async context manager serving 127.0.0.1 on a free port, records what it received
(credentials redacted) and injects faults on demand. Point Pipecat's own service at it:

- `DeepgramFake`: `DeepgramSTTService(api_key=..., base_url=fake.base_url)`
- `ElevenLabsFake`: `ElevenLabsTTSService(api_key=..., url=fake.url, settings=...)`
- `OpenAIFake`: `OpenAILLMService(api_key=..., base_url=fake.base_url, settings=...)`
"""

from .deepgram_fake import DeepgramConnection, DeepgramFake, StreamFault, Utterance
from .elevenlabs_fake import ContextRecord, ElevenLabsConnection, ElevenLabsFake
from .openai_fake import HttpFault, OpenAIFake, OpenAIRequest, echo_reply

__all__ = [
    "ContextRecord",
    "DeepgramConnection",
    "DeepgramFake",
    "ElevenLabsConnection",
    "ElevenLabsFake",
    "HttpFault",
    "OpenAIFake",
    "OpenAIRequest",
    "StreamFault",
    "Utterance",
    "echo_reply",
]
