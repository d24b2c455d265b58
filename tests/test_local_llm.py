"""TALKLINE_RESPONDER=local: llama.cpp's server with the bundled SmolLM2 answers spoken turns."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pipecat.frames.frames import Frame, LLMTextFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from talkline.audio import peak
from talkline.client import RTVIClient
from talkline.config import BUNDLED_LLM_FILE, SettingsError, load_settings
from talkline.services.llama_server import (
    LlamaServerProcess,
    LocalLLMOptions,
    LocalLLMUnavailableError,
)
from talkline.services.openai_llm import APOLOGY, GuardedOpenAILLMService
from talkline.services.responder import build_responder
from talkline.services.spoken_answer import AnswerCutFrame
from tests.support import (
    ServerThread,
    bot_text,
    final_transcript,
    running_server,
    speak_and_wait_for_answer,
    speak_until_turns,
    words,
)
from tests.test_spoken_answer import speak_answer

MODEL_NAME = BUNDLED_LLM_FILE.removesuffix(".gguf")


@pytest.fixture(scope="module")
def llm_server() -> Iterator[ServerThread]:
    """An offline-brain server that answers with the local LLM (the bundled model)."""
    with running_server(responder="local") as server:
        yield server


def assert_answered_by_the_model(client: RTVIClient) -> None:
    """The bot said something of its own (not the echo, not the apology), and spoke it."""
    said = bot_text(client)
    assert words(said), f"no answer: {[e.type for e in client.events]}"
    assert APOLOGY not in said and not said.startswith("You said")
    errors = [e.data.get("error", "") for e in client.of_type("error")]
    assert not [e for e in errors if "language model" in e], errors
    assert client.turns and peak(bytes(client.turns[-1].audio)) > 1000


async def test_the_local_llm_answers_a_spoken_question(
    llm_server: ServerThread, weather_pcm: bytes
) -> None:
    """A spoken question is transcribed, answered by SmolLM2 through llama.cpp, and spoken."""
    async with RTVIClient(llm_server.ws_url) as client:
        ready = await client.client_ready()
        await speak_and_wait_for_answer(client, weather_pcm)
    assert ready.data["about"]["responder"] == "local"
    assert ready.data["about"]["model"] == MODEL_NAME
    assert "weather" in words(final_transcript(client))
    assert_answered_by_the_model(client)


class RawAnswer(FrameProcessor):
    """Passes every frame on, keeping the LLM's raw text (what ``bot-llm-text`` carries, the
    words the TTS drops included) and whether the LLM said the answer was cut."""

    def __init__(self) -> None:
        super().__init__()
        self.text = ""
        self.cut = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMTextFrame):
            self.text += frame.text
        self.cut = self.cut or isinstance(frame, AnswerCutFrame)
        await self.push_frame(frame, direction)


SENTENCE_END = (".", "!", "?", "\u2026")
CUT_TOKENS = 8  # SmolLM2 ended 0 of 30 answers to the question on a sentence end at 8 tokens


def ends_a_sentence(text: str) -> bool:
    """Whether ``text`` ends with a sentence end (closing quotes or brackets after it aside)."""
    return text.rstrip("\"')\u201d\u2019 \n").endswith(SENTENCE_END)


def comparable(text: str) -> str:
    """``text`` without markdown marks and with single spaces, to compare raw and spoken."""
    return " ".join(text.translate(str.maketrans("", "", "*_`#")).split())


async def test_an_answer_cut_by_max_tokens_ends_on_a_whole_sentence(
    llm_server: ServerThread,
) -> None:
    """SmolLM2 asked for a long answer with room for 8 tokens: llama.cpp stops it mid-sentence
    (the raw text does not end a sentence), and what is spoken is the head of that text ending
    on a whole sentence: its last sentence end, its last comma with a full stop, or "...".

    The model samples: a cut that happens to land on a sentence end drops nothing and proves
    nothing, so the question is asked again (up to three times).
    """
    assert llm_server.shared.llm is not None
    settings = load_settings(_env_file=None, responder="local", local_llm_max_tokens=CUT_TOKENS)
    for _attempt in range(3):
        raw = RawAnswer()
        llm = build_responder(settings, llm_server.shared.llm.api_url)
        tts, _context = await speak_answer(
            Pipeline([llm, raw]), "Tell me all about dragons.", within=60
        )
        if not ends_a_sentence(raw.text):
            break
    written, spoken = comparable(raw.text), comparable(" ".join(tts.spoken))
    assert raw.cut and not ends_a_sentence(written), raw.text
    assert words(spoken) and ends_a_sentence(spoken), (raw.text, tts.spoken)
    # The head of what the model wrote: "..." added, or the words after the end dropped.
    head = spoken.removesuffix("...").rstrip(".!?\u2026")
    assert written.startswith(head), (raw.text, tts.spoken)


def test_health_names_the_local_responder_and_its_model(llm_server: ServerThread) -> None:
    """/health says responder=local and which GGUF model answers."""
    body = httpx.get(f"{llm_server.http_url}/health").json()
    assert body["responder"] == "local" and body["model"] == MODEL_NAME


async def test_next_turn_is_answered_after_the_llm_server_is_killed(
    llm_server: ServerThread, weather_pcm: bytes, dragon_pcm: bytes
) -> None:
    """llama.cpp's server dies after an answer; it is restarted and the session's next turn
    is answered by the model."""
    llm = llm_server.shared.llm
    assert llm is not None
    async with RTVIClient(llm_server.ws_url) as client:
        await client.client_ready()
        await speak_and_wait_for_answer(client, weather_pcm)
        first_pid, restarts = llm.pid, llm.restarts
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)
        async with asyncio.timeout(120):
            while llm.pid == first_pid or not await llm.healthy():
                await asyncio.sleep(0.1)
        await speak_until_turns(client, dragon_pcm, answered=2)
    assert llm.restarts == restarts + 1
    assert_answered_by_the_model(client)
    heard = [e for e in client.of_type("user-transcription") if "dragon" in e.data["text"]]
    answer = " ".join(e.data["text"] for e in client.of_type("bot-tts-text") if e.at > heard[-1].at)
    assert words(answer) and APOLOGY not in answer


def test_a_missing_model_file_is_refused_by_name(tmp_path: Path) -> None:
    """A GGUF path that does not exist is a settings error naming the variable and the path."""
    missing = tmp_path / "nowhere.gguf"
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None, responder="local", local_llm_model=str(missing))
    assert "TALKLINE_LOCAL_LLM_MODEL" in str(refused.value)
    assert f"cannot read a GGUF model at {missing}" in str(refused.value)


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    """A file that is not a GGUF model (here: a Piper voice's JSON) is refused at start."""
    wrong = tmp_path / "voice.onnx.json"
    wrong.write_text('{"audio": {}}')
    with pytest.raises(SettingsError, match=f"{wrong} is not a GGUF model file"):
        load_settings(_env_file=None, responder="local", local_llm_model=str(wrong))


def test_serve_with_a_bad_model_path_exits_with_a_clear_error(tmp_path: Path) -> None:
    """`talkline serve` with a bad GGUF path prints one line naming it and exits 2."""
    env = os.environ | {
        "TALKLINE_RESPONDER": "local",
        "TALKLINE_LOCAL_LLM_MODEL": str(tmp_path / "missing.gguf"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "talkline", "serve", "--port", "0"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "TALKLINE_LOCAL_LLM_MODEL" in result.stderr and "missing.gguf" in result.stderr


async def test_a_gguf_llama_cpp_cannot_load_fails_start_up_by_name(tmp_path: Path) -> None:
    """A file with GGUF's magic but no model in it: start-up fails, naming the server."""
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(60))
    server = LlamaServerProcess(LocalLLMOptions(model=broken))
    with pytest.raises(LocalLLMUnavailableError, match=r"llama.cpp server \(broken\) exited"):
        await server.start()
    await server.stop()


def test_responder_local_needs_the_offline_brain() -> None:
    """responder=local with the Gemini brain is refused: only the offline brain uses it."""
    with pytest.raises(SettingsError, match="responder=local answers for the offline brain"):
        load_settings(_env_file=None, brain="gemini", gemini_api_key="k", responder="local")


def chat(exchanges: int) -> list[dict[str, str]]:
    """A system message, then ``exchanges`` user/assistant pairs, numbered."""
    messages = [{"role": "system", "content": "be brief"}]
    for n in range(exchanges):
        messages += [
            {"role": "user", "content": f"q{n}"},
            {"role": "assistant", "content": f"a{n}"},
        ]
    return messages


def test_the_local_responder_sends_only_the_newest_messages() -> None:
    """A long session's request carries the system message and the newest turns only, starting
    with a user message, so it fits llama.cpp's context window."""
    settings = load_settings(_env_file=None, responder="local", local_llm_history=3)
    service = build_responder(settings, "http://127.0.0.1:9/v1")
    assert isinstance(service, GuardedOpenAILLMService)
    sent = service.build_chat_completion_params({"messages": chat(30)})
    assert [m["content"] for m in sent["messages"]] == ["be brief", "q29", "a29"]
    assert sent["max_tokens"] == settings.local_llm_max_tokens
    assert sent["extra_body"] == {"repeat_penalty": settings.local_llm_repeat_penalty}
    short = service.build_chat_completion_params({"messages": chat(1)})
    assert short["messages"] == chat(1)
