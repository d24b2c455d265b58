"""Wire-level facts of the Gemini Live API: paths, close codes, key spellings, payloads."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs

CLOSE_NORMAL = 1000
CLOSE_INVALID_ARGUMENT = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_INTERNAL_ERROR = 1011

REASON_INVALID_ARGUMENT = "Request contains an invalid argument."
REASON_BAD_KEY = "API key not valid. Please pass a valid API key."
REASON_NO_KEY = (
    "Method doesn't allow unregistered callers (callers without established identity)."
    " Please use API Key or other form of API consumer identity to call this API."
)
REASON_SESSION_NOT_FOUND = "BidiGenerateContent session not found"
REASON_DEADLINE = "Deadline expired before operation could complete."
REASON_INTERNAL = "Internal error occurred."
MAX_REASON_BYTES = 123

OUTPUT_MIME = "audio/pcm;rate=24000"
OUTPUT_RATE = 24000
INPUT_RATE = 16000

DEFAULT_MODELS = frozenset(
    {
        "gemini-2.5-flash-native-audio-preview-12-2025",
        "gemini-2.5-flash-native-audio-preview-09-2025",
        "gemini-2.5-flash-native-audio-latest",
        "gemini-3.1-flash-live-preview",
        "gemini-live-2.5-flash-preview-native-audio-09-2025",
    }
)

_PATH = re.compile(
    r"^/+ws/google\.ai\.generativelanguage\.(v1|v1beta|v1alpha)\.GenerativeService\."
    r"(BidiGenerateContent|BidiGenerateContentConstrained)$"
)
_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")
_RATE = re.compile(r"rate=(\d+)")
_URL_SAFE = str.maketrans("-_", "+/")


@dataclass(frozen=True)
class Endpoint:
    """What a request path and its credentials say about the connection."""

    api_version: str
    method: str
    api_key: str | None
    key_source: str | None


def model_not_found(model: str, api_version: str) -> str:
    """The real service's close reason for an unknown model."""
    return (
        f"{model} is not found for API version {api_version}, or is not supported for"
        " bidiGenerateContent. Call ListModels to see the list of available models and their"
        " supported methods."
    )


def parse_endpoint(request_path: str, headers: Any) -> Endpoint | None:
    """Match a request path against the Live API endpoints; None when it is not one."""
    path, _, query = request_path.partition("?")
    match = _PATH.match(path)
    if match is None:
        return None
    key, source = _find_key(parse_qs(query), headers)
    return Endpoint(match.group(1), match.group(2), key, source)


def _find_key(query: dict[str, list[str]], headers: Any) -> tuple[str | None, str | None]:
    if headers.get("x-goog-api-key"):
        return headers["x-goog-api-key"], "header"
    if query.get("key"):
        return query["key"][0], "query"
    scheme, _, token = (headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "token" and token:
        return token, "token"
    return None, None


def redact_path(request_path: str) -> str:
    """Request path with the value of any `key` query parameter hidden."""
    return re.sub(r"([?&]key=)[^&]*", r"\1<redacted>", request_path)


@lru_cache(maxsize=4096)  # a message's keys repeat: camelCase → snake_case once per name
def snake(name: str) -> str:
    """`generationConfig` -> `generation_config`; snake_case names pass through."""
    return _CAMEL.sub(r"_\1", name).lower()


def normalize(value: Any) -> Any:
    """Copy of a JSON value with every object key in snake_case."""
    if isinstance(value, dict):
        return {snake(k): normalize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return value


def decode_b64(data: str) -> bytes:
    """Decode base64 in either alphabet (standard or URL-safe), padding optional."""
    data = data.strip().translate(_URL_SAFE)
    return base64.b64decode(data + "=" * (-len(data) % 4))


def encode_b64(data: bytes) -> str:
    """Standard base64, as the service sends it."""
    return base64.b64encode(data).decode("ascii")


def sample_rate(mime_type: str | None, default: int = INPUT_RATE) -> int:
    """Sample rate declared in a mime type such as `audio/pcm;rate=16000`."""
    match = _RATE.search(mime_type or "")
    return int(match.group(1)) if match else default


def cut_reason(reason: str) -> str:
    """Shorten a close reason to the 123 bytes a close frame can carry."""
    raw = reason.encode("utf-8")[:MAX_REASON_BYTES]
    return raw.decode("utf-8", errors="ignore")


def duration(seconds: float) -> str:
    """Protobuf JSON duration: `50s`, `0.500s`."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{seconds:.3f}s"


def frame(message: dict[str, Any]) -> bytes:
    """Serialize a server message; bytes make websockets send a binary frame."""
    return json.dumps(message, separators=(",", ":")).encode("utf-8")


def server_content(**fields: Any) -> dict[str, Any]:
    """A `serverContent` message with camelCase fields."""
    return {"serverContent": fields}


def audio_part(pcm: bytes) -> dict[str, Any]:
    """One modelTurn message carrying one chunk of reply audio."""
    blob = {"mimeType": OUTPUT_MIME, "data": encode_b64(pcm)}
    return server_content(modelTurn={"parts": [{"inlineData": blob}]})


def turn_complete(prompt_tokens: int, response_tokens: int) -> dict[str, Any]:
    """`turnComplete` with usage counts, as the service ends a reply."""
    usage = {
        "promptTokenCount": prompt_tokens,
        "responseTokenCount": response_tokens,
        "totalTokenCount": prompt_tokens + response_tokens,
    }
    return {"serverContent": {"turnComplete": True}, "usageMetadata": usage}


def resumption_update(handle: str) -> dict[str, Any]:
    """A resumable `sessionResumptionUpdate`."""
    return {"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}}


def go_away(seconds: float) -> dict[str, Any]:
    """A `goAway` announcing the close in `seconds`."""
    return {"goAway": {"timeLeft": duration(seconds)}}
