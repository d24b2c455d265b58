"""How fast the local LLM answers: first-token latency and tokens per second.

``python -m talkline.bench.llm_speed [--model FILE.gguf] [--threads 2]`` starts llama.cpp's
server as ``TALKLINE_RESPONDER=local`` does, asks it a set of short spoken-style questions
one at a time with talkline's own settings (system instruction, max tokens, repeat
penalty), and prints each answer's timings and the medians. llama.cpp streams one token per
chunk, so tokens are counted as the chunks that carry text.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from talkline.config import Settings
from talkline.services.llama_server import LlamaServerProcess, LocalLLMOptions

PROMPTS = (
    "What is the weather like in Paris today?",
    "Please tell me a story about a green dragon.",
    "How do I boil an egg?",
    "What's a good name for a cat?",
    "Can you recommend a book for the weekend?",
    "Why is the sky blue?",
    "What time zone is London in?",
    "Tell me a joke about computers.",
    "How many legs does a spider have?",
    "What should I cook for dinner tonight?",
)


@dataclass
class Answer:
    prompt: str
    first_token_ms: float
    tokens: int
    tokens_per_sec: float  # after the first token
    text: str


async def ask(client: AsyncOpenAI, settings: Settings, model: str, prompt: str) -> Answer:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": settings.system_instruction},
        {"role": "user", "content": prompt},
    ]
    started = time.perf_counter()
    first = last = 0.0
    pieces: list[str] = []
    stream = await client.chat.completions.create(
        model=model,
        messages=messages,
        stream=True,
        max_tokens=settings.local_llm_max_tokens,
        extra_body={"repeat_penalty": settings.local_llm_repeat_penalty},
    )
    async for chunk in stream:
        text = chunk.choices[0].delta.content if chunk.choices else None
        if text:
            last = time.perf_counter()
            first = first or last
            pieces.append(text)
    rate = (len(pieces) - 1) / (last - first) if len(pieces) > 1 and last > first else 0.0
    return Answer(prompt, (first - started) * 1000, len(pieces), rate, "".join(pieces))


async def measure(settings: Settings) -> list[Answer]:
    options = settings.options(
        LocalLLMOptions, prefix="local_llm_", model=settings.local_llm_model_path
    )
    server = LlamaServerProcess(options)
    await server.start()
    try:
        client = AsyncOpenAI(api_key="none", base_url=server.api_url)
        await ask(client, settings, server.model_name, "Hello.")  # warm the caches
        return [await ask(client, settings, server.model_name, p) for p in PROMPTS]
    finally:
        await server.stop()


def summary(answers: list[Answer]) -> dict[str, float]:
    return {
        "first_token_ms_median": statistics.median(a.first_token_ms for a in answers),
        "first_token_ms_max": max(a.first_token_ms for a in answers),
        "tokens_per_sec_median": statistics.median(a.tokens_per_sec for a in answers),
        "tokens_median": statistics.median(a.tokens for a in answers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a GGUF file (default: the bundled one)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    overrides = {"local_llm_threads": args.threads, "brain": "local", "responder": "local"}
    if args.model:
        overrides["local_llm_model"] = str(args.model)
    settings = Settings(_env_file=None, **overrides)  # type: ignore[call-arg]
    answers = asyncio.run(measure(settings))
    result = {"answers": [asdict(a) for a in answers], "summary": summary(answers)}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for a in answers:
        print(f"{a.first_token_ms:6.0f} ms {a.tokens:3d} tok {a.tokens_per_sec:6.1f} tok/s  "
              f"{a.prompt} -> {a.text.strip()!r}")  # fmt: skip
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
