"""An OpenAI-compatible LLM that never leaves the user in silence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from openai import AsyncStream
from openai.types.chat import ChatCompletionChunk
from pipecat.frames.frames import Frame, LLMContextFrame, LLMTextFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.openai.llm import OpenAILLMService

from talkline.services.spoken_answer import AnswerCutFrame

APOLOGY = "Sorry, I can't answer right now. Please try again in a moment."

# --- Pipecat internals this module relies on -----------------------------------------------
# Private names of Pipecat's OpenAI service that GuardedOpenAILLMService reads, with why;
# tests/test_pipecat_contract.py checks each against the installed Pipecat.
# (owner, name, kind, why); kind is "override", "calls" or "reads" (reads or writes).
PIPECAT_PRIVATE: tuple[tuple[type, str, str, str], ...] = (
    (OpenAILLMService, "_client", "reads", "closed on cleanup: Pipecat leaves it open"),
)


class _PatientStream:
    """A chunk stream that gives up when the next chunk is more than ``gap`` seconds away,
    and calls ``on_cut`` once the chunk that says the answer hit its token limit has been
    handled (its text pushed)."""

    def __init__(
        self,
        stream: AsyncStream[ChatCompletionChunk],
        gap: float,
        on_cut: Callable[[], Awaitable[None]],
    ):
        self._stream = stream
        self._gap = gap
        self._on_cut = on_cut

    def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[ChatCompletionChunk]:
        chunks = self._stream.__aiter__()
        while True:
            try:
                chunk = await asyncio.wait_for(anext(chunks), self._gap)
            except StopAsyncIteration:
                return
            yield chunk
            if stopped_for_length(chunk):
                await self._on_cut()

    async def close(self) -> None:
        await self._stream.close()


def stopped_for_length(chunk: ChatCompletionChunk) -> bool:
    """Whether this chunk ends the answer because it reached ``max_tokens``."""
    return any(choice.finish_reason == "length" for choice in chunk.choices or ())


def recent_messages(messages: list[Any], keep: int) -> list[Any]:
    """The leading system messages and at most ``keep`` of the newest others, starting with
    a user message (chat templates expect a user turn first)."""
    system = 0
    while system < len(messages) and _role(messages[system]) == "system":
        system += 1
    recent = messages[system:][-keep:] if keep > 0 else []
    while recent and _role(recent[0]) != "user":
        recent = recent[1:]
    return messages[:system] + recent


def _role(message: Any) -> Any:
    return message.get("role") if isinstance(message, dict) else None


class GuardedOpenAILLMService(OpenAILLMService):
    """Pipecat's OpenAI-compatible LLM, with a deadline and a spoken apology when it fails.

    A server that is down or slow would otherwise leave the user in silence (the SDK waits
    up to ten minutes). Here the answer must start, and each piece of it follow the last,
    within ``first_response_secs``; on any
    failure the client gets an RTVI error and the user hears a short apology.
    ``max_history`` bounds how many past messages each request carries. An answer the server
    stops at ``max_tokens`` is followed by an ``AnswerCutFrame``, so the TTS does not speak its
    unfinished last sentence (services/spoken_answer.py).
    """

    def __init__(
        self, *, first_response_secs: float, max_history: int | None = None, **kwargs: Any
    ):
        super().__init__(**kwargs)
        self._first_response_secs = first_response_secs
        self._max_history = max_history
        self._apologized = False

    def build_chat_completion_params(self, params_from_context: Any) -> dict[str, Any]:
        """Pipecat's request, with only the newest ``max_history`` messages when set: a small
        context window (llama.cpp's) would otherwise refuse every turn of a long session."""
        params = super().build_chat_completion_params(params_from_context)
        if self._max_history is not None:
            params["messages"] = recent_messages(list(params["messages"]), self._max_history)
        return params

    async def get_chat_completions(self, context: LLMContext) -> AsyncStream[ChatCompletionChunk]:
        stream = await asyncio.wait_for(
            super().get_chat_completions(context), self._first_response_secs
        )
        patient = _PatientStream(stream, self._first_response_secs, self._answer_was_cut)
        return patient  # type: ignore[return-value]

    async def _answer_was_cut(self) -> None:
        """Tell the TTS the answer stops mid-sentence, so it drops the unfinished end."""
        await self.push_frame(AnswerCutFrame())

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, LLMContextFrame):
            self._apologized = False
        await super().process_frame(frame, direction)

    async def push_error(self, error_msg: str, *args: Any, **kwargs: Any) -> None:
        await super().push_error(f"The language model failed: {error_msg}", *args, **kwargs)
        if not self._apologized:
            self._apologized = True
            await self.push_frame(LLMTextFrame(APOLOGY))

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._client.close()  # Pipecat leaves the HTTP client open
