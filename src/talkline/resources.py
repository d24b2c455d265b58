"""What all sessions of one process share: models, the Piper process, an HTTP client."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
from loguru import logger

from talkline.config import Settings
from talkline.services.local_stt import SharedWhisper
from talkline.services.piper_process import PiperProcess
from talkline.services.turn_models import TurnModels


class SharedResources:
    """Loaded in the background at start-up; ``ready`` is set once every piece is up."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.ready = asyncio.Event()
        self.failure: str | None = None
        self.turn_models: TurnModels | None = None
        self.whisper: SharedWhisper | None = None
        self.piper: PiperProcess | None = None
        self.http: aiohttp.ClientSession | None = None
        self._loading: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loading = asyncio.create_task(self._load(), name="load-shared-resources")

    async def wait_ready(self) -> None:
        """Wait for start-up; raise if it failed."""
        if self._loading:
            await asyncio.shield(self._loading)
        if self.failure:
            raise RuntimeError(self.failure)

    @property
    def tts_url(self) -> str:
        if self.settings.piper_url:
            return self.settings.piper_url.rstrip("/")
        assert self.piper is not None
        return self.piper.url

    @property
    def tts_voice(self) -> str:
        return self.settings.piper_voice_path.name.removesuffix(".onnx")

    async def _load(self) -> None:
        settings = self.settings
        try:
            self.http = aiohttp.ClientSession()
            loads = [self._load_turn_models()]
            if settings.effective_stt == "whisper":
                loads.append(self._load_whisper())
            if settings.effective_tts == "piper" and not settings.piper_url:
                self.piper = PiperProcess(settings.piper_voice_path, port=settings.piper_port)
                loads.append(self.piper.start())
            await asyncio.gather(*loads)
            self.ready.set()
            logger.info("ready")
        except Exception as error:
            self.failure = f"start-up failed: {error}"
            logger.error(self.failure)

    async def _load_turn_models(self) -> None:
        self.turn_models = await asyncio.to_thread(TurnModels)

    async def _load_whisper(self) -> None:
        settings = self.settings
        self.whisper = await asyncio.to_thread(
            SharedWhisper,
            settings.whisper_model_path,
            compute_type=settings.whisper_compute_type,
            concurrency=settings.whisper_concurrency,
            threads=settings.whisper_threads,
        )

    async def stop(self) -> None:
        if self._loading:
            self._loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loading
        if self.piper:
            await self.piper.stop()
        if self.http:
            await self.http.close()
        if self.turn_models:
            self.turn_models.close()
