"""What all sessions of one process share: models, the Piper and llama.cpp processes, HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from loguru import logger

from talkline.services.llama_server import LlamaServerProcess, LocalLLMOptions
from talkline.services.moonshine_convert import ensure_converted
from talkline.services.moonshine_stt import SharedMoonshine
from talkline.services.piper_process import PiperProcess
from talkline.services.turn_models import TurnModels

if TYPE_CHECKING:
    from talkline.services.local_stt import SharedWhisper  # faster-whisper: only when used

GEMINI_MODULE = "talkline.services.gemini"  # imported only when the Gemini brain is used


def settle_heap() -> None:
    """Take what start-up loaded (modules, models, the SDK) out of the collector's sight.

    Python's full collections walk every object in the process: ~0.13 s on the event loop
    with the models and Pipecat loaded, which every session's audio would wait behind
    (seen once per 30 s run of 20 sessions). After ``gc.freeze()`` they walk only what
    sessions allocate since.
    """
    gc.collect()
    gc.freeze()


def _import_gemini() -> None:
    importlib.import_module(GEMINI_MODULE)


@dataclass(frozen=True)
class ResourceOptions:
    """Which shared pieces to load: Moonshine or Whisper when it transcribes, Piper when it
    speaks."""

    moonshine_model: Path | None = None  # moonshine-cpp's base-en files; None: no Moonshine
    model_cache_dir: Path | None = None  # where the converted Moonshine is kept
    moonshine_concurrency: int = 2
    moonshine_threads: int = 1
    whisper_model: str | None = None  # a CTranslate2 model directory; None: no Whisper
    whisper_compute_type: str = "int8"
    whisper_concurrency: int = 2
    whisper_threads: int = 2
    piper_voice: Path | None = None  # a Piper .onnx voice; None: no Piper
    piper_url: str | None = None  # an external Piper server instead of starting one
    piper_port: int = 0
    local_llm: LocalLLMOptions | None = None  # llama.cpp's server; None: no local LLM
    gemini: bool = False  # import the Gemini service and its SDK before the first session


class SharedResources:
    """Loaded in the background at start-up; ``ready`` is set once every piece is up."""

    def __init__(self, options: ResourceOptions, *, piper: PiperProcess | None = None):
        """``piper``: Piper for ``options.piper_voice``, spawned early (``spawn_early``)."""
        self.options = options
        self._early_piper = piper
        self.ready = asyncio.Event()
        self.failure: str | None = None
        self.turn_models: TurnModels | None = None
        self.whisper: SharedWhisper | None = None
        self.moonshine: SharedMoonshine | None = None
        self.piper: PiperProcess | None = None
        self.llm: LlamaServerProcess | None = None
        self.http: aiohttp.ClientSession | None = None
        self._loading: asyncio.Task[None] | None = None
        # The Gemini service and its SDK, imported once ready: ~0.35 s of CPU (more on a busy
        # machine) the first caller would otherwise wait for.
        self.warm_up: asyncio.Task[None] | None = None
        self.settled = asyncio.Event()  # start-up's objects frozen (settle_heap)
        self._settling: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loading = asyncio.create_task(self._load(), name="load-shared-resources")

    async def wait_ready(self) -> None:
        """Wait for start-up; raise if it failed."""
        if self._loading:
            await asyncio.shield(self._loading)
        if self.failure:
            raise RuntimeError(self.failure)

    @property
    def is_ready(self) -> bool:
        return self.ready.is_set()

    @property
    def tts_url(self) -> str:
        if self.options.piper_url:
            return self.options.piper_url.rstrip("/")
        assert self.piper is not None
        return self.piper.url

    @property
    def tts_voice(self) -> str:
        assert self.options.piper_voice is not None
        return self.options.piper_voice.name.removesuffix(".onnx")

    async def _load(self) -> None:
        options = self.options
        try:
            self.http = aiohttp.ClientSession()
            loads = [self._load_turn_models()]
            if options.whisper_model is not None:
                loads.append(self._load_whisper(options.whisper_model))
            if options.moonshine_model is not None:
                loads.append(self._load_moonshine(options.moonshine_model))
            if options.piper_voice is not None and not options.piper_url:
                self.piper = self._early_piper or PiperProcess(
                    options.piper_voice, port=options.piper_port
                )
                loads.append(self.piper.start())
            elif self._early_piper is not None:  # spawned for settings that run none after all
                self._early_piper.abandon_early()
            if options.local_llm is not None:
                self.llm = LlamaServerProcess(options.local_llm)
                loads.append(self.llm.start())
            await asyncio.gather(*loads)
            self.ready.set()
            logger.info("ready")
            if options.gemini:  # after /ready says 200, so it never delays it
                self.warm_up = asyncio.create_task(asyncio.to_thread(_import_gemini))
            self._settling = asyncio.create_task(self._settle(), name="settle-heap")
        except Exception as error:
            self.failure = f"start-up failed: {error}"
            logger.error(self.failure)

    async def _settle(self) -> None:
        if self.warm_up is not None:
            await asyncio.wait([self.warm_up])  # its outcome is for its callers to see
        settle_heap()
        self.settled.set()

    async def _load_turn_models(self) -> None:
        self.turn_models = await asyncio.to_thread(TurnModels)

    async def _load_whisper(self, model: str) -> None:
        from talkline.services.local_stt import SharedWhisper  # 0.3 s of imports: only here

        options = self.options
        self.whisper = await asyncio.to_thread(
            SharedWhisper,
            model,
            compute_type=options.whisper_compute_type,
            concurrency=options.whisper_concurrency,
            threads=options.whisper_threads,
        )

    async def _load_moonshine(self, source: Path) -> None:
        options = self.options
        assert options.model_cache_dir is not None
        model_dir = await asyncio.to_thread(ensure_converted, source, options.model_cache_dir)
        self.moonshine = await asyncio.to_thread(
            SharedMoonshine,
            model_dir,
            concurrency=options.moonshine_concurrency,
            threads=options.moonshine_threads,
        )

    async def stop(self) -> None:
        if self.warm_up:
            self.warm_up.cancel()  # the import itself finishes in its thread
        if self._settling:
            self._settling.cancel()
        if self._loading:
            self._loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loading
        if self.piper:
            await self.piper.stop()
        if self.llm:
            await self.llm.stop()
        if self.http:
            await self.http.close()
        if self.turn_models:
            self.turn_models.close()
