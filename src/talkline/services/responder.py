"""The offline brain's responder: echo what was heard, or an OpenAI-compatible LLM server
(one the user runs, or the local llama.cpp server that talkline starts)."""

from __future__ import annotations

from typing import Any

from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from talkline.config import Settings, model_name


def last_user_text(messages: list[Any]) -> str:
    """The text of the newest user message in an LLM context, or an empty string."""
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content.strip()
        if isinstance(content, list):
            parts = [p.get("text", "") for p in content if isinstance(p, dict)]
            return " ".join(part for part in parts if part).strip()
    return ""


class EchoResponder(FrameProcessor):
    """Answers every user turn with what it heard, so the pipeline works with no LLM."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, LLMContextFrame):
            await self.push_frame(frame, direction)
            return
        heard = last_user_text(frame.context.get_messages())
        if not heard:
            return
        await self.push_frame(LLMFullResponseStartFrame())
        # Two pieces, so speech can start with the short one (see phrase_by_phrase).
        await self.push_frame(LLMTextFrame("You said:"))
        await self.push_frame(LLMTextFrame(f" {heard}"))
        await self.push_frame(LLMFullResponseEndFrame())


def phrase_by_phrase(settings: Settings) -> bool:
    """Whether the TTS may speak each piece of the answer as it comes.

    The echo responder sends whole phrases, so they need not wait to be gathered into
    sentences, and "You said:" is heard while the rest is still being synthesized. An LLM
    streams tokens, which must be gathered into sentences to sound right.
    """
    return settings.effective_brain == "local" and settings.effective_responder == "echo"


def build_responder(settings: Settings, local_llm_url: str | None = None) -> FrameProcessor:
    """The responder the settings choose; ``local_llm_url``: the llama.cpp server's API."""
    if settings.effective_responder == "openai":
        from talkline.services.openai_llm import GuardedOpenAILLMService  # only when used

        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else "none"
        return GuardedOpenAILLMService(
            api_key=key,
            base_url=settings.llm_base_url,
            settings=GuardedOpenAILLMService.Settings(
                model=settings.llm_model, system_instruction=settings.system_instruction
            ),
            first_response_secs=settings.llm_timeout,
        )
    if settings.effective_responder == "local":
        assert local_llm_url is not None, "responder=local needs the llama.cpp server's URL"
        return build_local_llm(settings, local_llm_url)
    return EchoResponder()


def build_local_llm(settings: Settings, api_url: str) -> FrameProcessor:
    """The OpenAI-compatible responder on llama.cpp's server, tuned for short spoken answers.

    ``max_tokens`` caps an answer's length (a small model may ramble on), and llama.cpp's
    own ``repeat_penalty`` (not an OpenAI field, so it travels in the request's extra body)
    stops it from saying the same phrase over and over. Only the newest messages are sent, so
    a long session stays inside the model's context window.
    """
    from talkline.services.openai_llm import GuardedOpenAILLMService  # only when used

    return GuardedOpenAILLMService(
        api_key="none",  # llama.cpp's server on 127.0.0.1 asks for none
        base_url=api_url,
        settings=GuardedOpenAILLMService.Settings(
            model=model_name(settings.local_llm_model_path),
            system_instruction=settings.system_instruction,
            max_tokens=settings.local_llm_max_tokens,
            extra={"extra_body": {"repeat_penalty": settings.local_llm_repeat_penalty}},
        ),
        first_response_secs=settings.llm_timeout,
        max_history=settings.local_llm_history,
    )
