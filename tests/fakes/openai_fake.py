"""`OpenAIFake`: the OpenAI Chat Completions API (`/v1/chat/completions`, `/v1/models`) on loopback.

Wire facts, from pipecat 1.14 (`services/openai/base_llm.py`) and the openai SDK it drives
(`openai/_streaming.py`, `openai/types/chat/chat_completion_chunk.py`):

- `POST {base_url}/chat/completions` with `Authorization: Bearer <key>` and a JSON body with
  `model`, `messages`, `stream: true`, `stream_options: {"include_usage": true}`.
- A streamed answer is Server-Sent Events: `data: {chat.completion.chunk}` lines, a blank line
  after each, ending with `data: [DONE]`. The first chunk's delta carries `role`, then `content`
  pieces, then a chunk with `finish_reason: "stop"`; with `include_usage` every chunk has
  `usage: null` and one last chunk has `choices: []` and the `usage` totals.
- Errors are JSON `{"error": {"message", "type", "param", "code"}}`; a bad key is 401 with
  `type: "invalid_request_error"`, `code: "invalid_api_key"`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from talkline.emulator.loopback import LoopbackServer

from .recording import KeyCheck, safe_headers

Reply = str | Callable[[list[dict[str, Any]]], str]
CREATED = 1_700_000_000


@dataclass
class OpenAIRequest:
    """One HTTP request and how it was answered."""

    method: str
    path: str
    headers: dict[str, str]
    key_accepted: bool
    body: dict[str, Any] | None = None
    status: int | None = None
    reply: str | None = None
    chunks_sent: int = 0
    completed: bool = False

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list((self.body or {}).get("messages", []))


@dataclass
class HttpFault:
    """Answer the next `times` completion requests with `status` and OpenAI's error JSON."""

    status: int
    times: int = 1
    message: str = "The server is overloaded or not ready yet."
    type: str = "server_error"
    code: str | None = None


def echo_reply(messages: list[dict[str, Any]]) -> str:
    """`I heard: <the last user message>`."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return f"I heard: {text_of(message.get('content'))}"
    return "I heard nothing."


def text_of(content: Any) -> str:
    """The text of a message's `content`, a string or a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> str:
    """OpenAI's error JSON."""
    return json.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


@dataclass
class _Completion:
    """Everything needed to write one completion, streamed or whole."""

    id: str
    model: str
    text: str
    pieces: list[str]
    prompt_tokens: int
    usage: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        completion = len(self.pieces)
        self.usage = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": self.model,
            "system_fingerprint": "fp_talkline_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def whole(self) -> dict[str, Any]:
        message = {"role": "assistant", "content": self.text, "refusal": None}
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": CREATED,
            "model": self.model,
            "system_fingerprint": "fp_talkline_fake",
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
            ],
            "usage": self.usage,
        }


@dataclass(kw_only=True, eq=False)
class OpenAIFake(KeyCheck, LoopbackServer):
    """A loopback OpenAI-compatible chat completions server.

    `async with OpenAIFake() as fake:` then `OpenAILLMService(api_key="test-key",
    base_url=fake.base_url, settings=OpenAILLMService.Settings(model="gpt-4.1"))`.

    api_key: the only key accepted (None accepts any); others get 401 `invalid_api_key`.
    reply: a fixed answer, or a function of the request's messages (default: `echo_reply`).
    words_per_chunk: how many words each streamed content chunk carries.
    first_chunk_delay, chunk_delay: seconds before the first chunk and between chunks.
    finish_reason: the last choice chunk's (`"length"`: as if `max_tokens` stopped the answer).
    models: ids listed by `GET /v1/models`.
    """

    scheme = "http"  # `base_url` is for `OpenAILLMService(base_url=...)`
    base_path = "/v1"

    reply: Reply = echo_reply
    words_per_chunk: int = 1
    first_chunk_delay: float = 0.0
    chunk_delay: float = 0.0
    finish_reason: str = "stop"
    models: tuple[str, ...] = ("gpt-4.1", "gpt-4o-mini")
    requests: list[OpenAIRequest] = field(default_factory=list, init=False, repr=False)
    faults: list[HttpFault] = field(default_factory=list, init=False, repr=False)
    cut_after_chunks: int | None = field(default=None, init=False, repr=False)
    _ids: itertools.count[int] = field(
        default_factory=lambda: itertools.count(1), init=False, repr=False
    )
    _runner: web.AppRunner | None = field(default=None, init=False, repr=False)

    async def _listen(self) -> int:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model}", self._model)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        port: int = self._runner.addresses[0][1]
        return port

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- recordings and faults --------------------------------------------------

    @property
    def completions(self) -> list[OpenAIRequest]:
        """Every chat completion request, in order."""
        return [r for r in self.requests if r.path == "/v1/chat/completions"]

    def fail_next(self, status: int = 503, times: int = 1, **error: Any) -> HttpFault:
        """Answer the next `times` completion requests with `status` and an error body."""
        fault = HttpFault(status, times, **error)
        self.faults.append(fault)
        return fault

    def reply_for(self, messages: list[dict[str, Any]]) -> str:
        """The answer the fake gives to `messages`."""
        return self.reply if isinstance(self.reply, str) else self.reply(messages)

    # -- handlers -------------------------------------------------------------------

    async def _record(self, request: web.Request) -> OpenAIRequest:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        record = OpenAIRequest(
            method=request.method,
            path=request.path,
            headers=safe_headers(request.headers.items()),
            key_accepted=scheme == "Bearer" and self.accepts(key),
        )
        if request.body_exists:
            record.body = await request.json()
        self.requests.append(record)
        await self.recorder.changed()
        return record

    async def _refusal(self, record: OpenAIRequest) -> web.Response | None:
        if not record.key_accepted:
            message = (
                "Incorrect API key provided. You can find your API key at "
                "https://platform.openai.com/account/api-keys."
            )
            body = error_body(message, "invalid_request_error", "invalid_api_key")
            return await self._error(record, 401, body)
        for fault in self.faults:
            if fault.times > 0:
                fault.times -= 1
                body = error_body(fault.message, fault.type, fault.code)
                return await self._error(record, fault.status, body)
        return None

    async def _error(self, record: OpenAIRequest, status: int, body: str) -> web.Response:
        record.status = status
        await self.recorder.changed()
        return web.Response(status=status, text=body, content_type="application/json")

    async def _models(self, request: web.Request) -> web.StreamResponse:
        record = await self._record(request)
        if (refusal := await self._refusal(record)) is not None:
            return refusal
        record.status = 200
        data = [_model_object(m) for m in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _model(self, request: web.Request) -> web.StreamResponse:
        record = await self._record(request)
        if (refusal := await self._refusal(record)) is not None:
            return refusal
        model = request.match_info["model"]
        if model not in self.models:
            message = f"The model '{model}' does not exist"
            return await self._error(
                record,
                404,
                error_body(message, "invalid_request_error", "model_not_found", "model"),
            )
        record.status = 200
        return web.json_response(_model_object(model))

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        record = await self._record(request)
        if (refusal := await self._refusal(record)) is not None:
            return refusal
        body = record.body or {}
        completion = self._completion(body)
        record.reply = completion.text
        record.status = 200
        if not body.get("stream"):
            record.completed = True
            await self.recorder.changed()
            return web.json_response(completion.whole())
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return await self._stream(request, record, completion, include_usage)

    def _completion(self, body: dict[str, Any]) -> _Completion:
        messages = list(body.get("messages", []))
        text = self.reply_for(messages)
        words = text.split(" ")
        size = max(1, self.words_per_chunk)
        pieces = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
        pieces = [p if i == 0 else f" {p}" for i, p in enumerate(pieces)]
        prompt = sum(len(text_of(m.get("content")).split()) for m in messages)
        return _Completion(
            id=f"chatcmpl-fake{next(self._ids):06d}",
            model=str(body.get("model", self.models[0])),
            text=text,
            pieces=pieces,
            prompt_tokens=prompt,
        )

    async def _stream(
        self,
        request: web.Request,
        record: OpenAIRequest,
        completion: _Completion,
        include_usage: bool,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
        )
        await response.prepare(request)
        if self.first_chunk_delay:
            await asyncio.sleep(self.first_chunk_delay)
        chunks = [completion.chunk({"role": "assistant", "content": "", "refusal": None})]
        chunks += [completion.chunk({"content": piece}) for piece in completion.pieces]
        chunks.append(completion.chunk({}, finish=self.finish_reason))
        for index, chunk in enumerate(chunks):
            if self.cut_after_chunks is not None and index >= self.cut_after_chunks:
                self.cut_after_chunks = None
                assert request.transport is not None
                request.transport.abort()  # mid-stream: no [DONE], no clean end
                return response
            if include_usage:
                chunk["usage"] = None
            await _send_event(response, json.dumps(chunk))
            record.chunks_sent += 1
            await self.recorder.changed()
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
        if include_usage:
            final = completion.chunk({}) | {"choices": [], "usage": completion.usage}
            await _send_event(response, json.dumps(final))
        await _send_event(response, "[DONE]")
        await response.write_eof()
        record.completed = True
        await self.recorder.changed()
        return response


async def _send_event(response: web.StreamResponse, data: str) -> None:
    await response.write(f"data: {data}\n\n".encode())


def _model_object(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": CREATED, "owned_by": "system"}
