"""BASELINE: a Gemini Live voice bot written the way Pipecat's documentation shows it.

This is the reference `talkline bench` compares talkline with (see
``../shared/PERF-BASELINE.md`` beside the repository). It is deliberately plain Pipecat
1.14: FastAPI ``/ws`` → ``FastAPIWebsocketTransport`` +
``ProtobufFrameSerializer`` → ``PipelineWorker`` with
``[transport.input(), user aggregator (Silero VAD, default turn strategies, i.e. Smart Turn
v3), GeminiLiveLLMService, transport.output(), assistant aggregator]``, one ``WorkerRunner``
per connection. Nothing is shared between sessions. The only additions are what the bench
needs: ``GET /ready``, command-line flags for the port and the (emulated) Gemini endpoint.

    python -m talkline.bench.baseline --port 7860 --gemini-base-url https://127.0.0.1:PORT \\
        --ca-file /tmp/.../ca.pem
"""

from __future__ import annotations

import argparse
import ssl
import sys

import uvicorn
from fastapi import FastAPI, WebSocket
from google.genai.types import HttpOptions
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import LLMRunFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.serializers.protobuf import ProtobufFrameSerializer
from pipecat.services.google.gemini_live.llm import GeminiLiveLLMService
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner

MODEL = "models/gemini-2.5-flash-native-audio-preview-12-2025"
SYSTEM_INSTRUCTION = "You are a friendly voice assistant. Answer briefly."


def make_app(api_key: str, http_options: HttpOptions | None) -> FastAPI:
    app = FastAPI()

    @app.get("/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.websocket("/ws")
    async def websocket_endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await run_bot(websocket, api_key, http_options)

    return app


async def run_bot(websocket: WebSocket, api_key: str, http_options: HttpOptions | None) -> None:
    transport = FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=ProtobufFrameSerializer(),
        ),
    )
    llm = GeminiLiveLLMService(
        api_key=api_key,
        settings=GeminiLiveLLMService.Settings(
            model=MODEL, voice="Aoede", system_instruction=SYSTEM_INSTRUCTION
        ),
        http_options=http_options,
    )
    context = LLMContext()
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())
    )
    pipeline = Pipeline(
        [transport.input(), user_aggregator, llm, transport.output(), assistant_aggregator]
    )
    worker = PipelineWorker(pipeline, params=PipelineParams(enable_metrics=True))

    @transport.event_handler("on_client_connected")
    async def on_client_connected(_transport: object, _client: object) -> None:
        await worker.queue_frames([LLMRunFrame()])

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(_transport: object, _client: object) -> None:
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


def gemini_http_options(base_url: str | None, ca_file: str | None) -> HttpOptions | None:
    if not base_url:
        return None
    options = HttpOptions(base_url=base_url)
    if ca_file:
        options.async_client_args = {"ssl": ssl.create_default_context(cafile=ca_file)}
    return options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--api-key", default="baseline-key")
    parser.add_argument("--gemini-base-url", help="e.g. the emulator's https://127.0.0.1:PORT")
    parser.add_argument("--ca-file", help="CA certificate the Gemini endpoint is signed with")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)

    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level=args.log_level)
    app = make_app(args.api_key, gemini_http_options(args.gemini_base_url, args.ca_file))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
