"""llama.cpp's OpenAI-compatible server as a supervised child process: the local LLM.

``TALKLINE_RESPONDER=local`` runs ``python -m llama_cpp.server`` (llama-cpp-python) on
127.0.0.1, shared by every session, and answers through the same OpenAI-compatible
responder as any other LLM server. Running it apart keeps a native crash or a long
generation from touching talkline's own process, and lets ``ChildServer`` restart it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from talkline.config import gguf_problem, model_name
from talkline.services.child_server import ChildServer, ChildServerUnavailableError


class LocalLLMUnavailableError(ChildServerUnavailableError):
    """llama.cpp's server did not come up."""


@dataclass(frozen=True)
class LocalLLMOptions:
    """Which GGUF model llama.cpp serves, with how many threads and how much context."""

    model: Path
    threads: int = 1
    context: int = 2048
    port: int = 0  # 0 picks a free port


class LlamaServerProcess(ChildServer):
    """Starts, health-checks, restarts and stops one llama.cpp server."""

    health_path = "/v1/models"  # answers once the model is loaded
    start_timeout_secs = 120.0  # a large GGUF on a slow disk takes a while to map
    unavailable = LocalLLMUnavailableError

    def __init__(self, options: LocalLLMOptions):
        problem = gguf_problem(options.model)
        if problem:
            raise LocalLLMUnavailableError(problem)
        super().__init__(port=options.port)
        self.options = options
        self.model_name = model_name(options.model)
        self.name = f"llama.cpp server ({self.model_name})"

    @property
    def api_url(self) -> str:
        """The OpenAI-compatible API's base URL."""
        return f"{self.url}/v1"

    def command(self) -> list[str]:
        options = self.options
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--model", str(options.model),
            "--model_alias", self.model_name,
            "--n_threads", str(options.threads),
            "--n_threads_batch", str(options.threads),
            "--n_ctx", str(options.context),
            "--verbose", "False",
        ]  # fmt: skip
