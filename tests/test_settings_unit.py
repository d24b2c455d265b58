"""Settings in-process: the exact words of each refusal (secrets kept out), of `about()`
and of `options()`."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from talkline.config import COMBINATIONS, SettingsError, load_settings
from tests.support import distinctive, secret_fields


def refusal(**overrides: object) -> str:
    with pytest.raises(SettingsError) as raised:
        load_settings(_env_file=None, **overrides)
    return str(raised.value)


def test_a_bad_value_is_shown_back_with_the_setting_named() -> None:
    assert refusal(max_sessions=-3) == (
        "invalid setting TALKLINE_MAX_SESSIONS (got -3): Input should be greater than or equal to 1"
    )


@pytest.mark.parametrize("name", secret_fields())
def test_a_bad_secret_value_is_never_shown_back(name: str) -> None:
    """A secret of the wrong type is refused by name, its value left out."""
    message = refusal(**{name: [distinctive(name)]})
    assert distinctive(name) not in message
    assert message.startswith(f"invalid setting TALKLINE_{name.upper()}: ")


def test_every_problem_is_listed_on_one_line() -> None:
    message = refusal(max_sessions=0, port=-1)
    assert message.count("invalid setting ") == 2 and "; invalid setting TALKLINE_" in message
    assert "TALKLINE_MAX_SESSIONS (got 0)" in message and "TALKLINE_PORT (got -1)" in message


def test_a_rule_across_settings_is_said_in_its_own_words() -> None:
    assert refusal(brain="gemini") == "invalid settings: brain=gemini needs GEMINI_API_KEY"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"stt": "deepgram"}, "stt=deepgram needs DEEPGRAM_API_KEY"),
        ({"tts": "elevenlabs"}, "tts=elevenlabs needs ELEVENLABS_API_KEY"),
        ({"responder": "openai"}, "responder=openai needs TALKLINE_LLM_BASE_URL"),
    ],
)
def test_a_service_without_its_key_is_refused(overrides: dict[str, str], expected: str) -> None:
    assert refusal(**overrides) == f"invalid settings: {expected}"


@pytest.mark.parametrize(
    ("overrides", "combination"),
    [
        ({"stt": "gemini"}, "stt=gemini, brain=local, tts=piper"),
        ({"tts": "gemini"}, "stt=moonshine, brain=local, tts=gemini"),
        ({"gemini_api_key": "k", "stt": "whisper"}, "stt=whisper, brain=gemini, tts=gemini"),
    ],
)
def test_stages_that_do_not_fit_the_brain_are_refused(
    overrides: dict[str, str], combination: str
) -> None:
    assert refusal(**overrides) == (
        f"invalid settings: {combination} is not a combination that works; these do: {COMBINATIONS}"
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {"stt": "deepgram", "deepgram_api_key": "d"},
        {"tts": "elevenlabs", "elevenlabs_api_key": "e"},
        {"gemini_api_key": "k", "tts": "piper"},
        {"stt": "whisper"},
    ],
)
def test_stages_with_their_keys_are_accepted(overrides: dict[str, str]) -> None:
    load_settings(_env_file=None, **overrides)


def test_masked_settings_say_what_auto_resolved_to() -> None:
    masked = load_settings(_env_file=None, gemini_api_key="k", tts="piper").masked()
    assert {key: masked[key] for key in masked if key.startswith("effective_")} == {
        "effective_brain": "gemini",
        "effective_responder": "echo",
        "effective_stt": "gemini",
        "effective_tts": "piper",
        "effective_turn_strategy": "transcript",
    }
    assert masked["port"] == 5000 and masked["brain"] == "auto"


@pytest.mark.parametrize(
    ("overrides", "strategy"),
    [
        ({}, "transcript"),
        ({"smart_turn": False}, "silence"),
        ({"turn_strategy": "smart_turn"}, "smart_turn"),
        ({"smart_turn": False, "turn_strategy": "transcript"}, "transcript"),
    ],
)
def test_turn_strategy_auto_keeps_smart_turn_false_meaning_silence(
    overrides: dict[str, object], strategy: str
) -> None:
    assert load_settings(_env_file=None, **overrides).effective_turn_strategy == strategy


ECHO_NOTE = "echo responder: answers with what it heard (set TALKLINE_LLM_BASE_URL)"


@pytest.mark.parametrize(
    ("overrides", "about"),
    [
        ({}, {"brain": "local", "responder": "echo", "stt": "moonshine", "tts": "piper"}),
        (
            {"llm_base_url": "http://127.0.0.1:11434/v1"},
            {"brain": "local", "responder": "openai", "stt": "moonshine", "tts": "piper"},
        ),
        (
            {"gemini_api_key": "k", "gemini_model": "m-1"},
            {"brain": "gemini", "model": "m-1", "stt": "gemini", "tts": "gemini"},
        ),
    ],
    ids=["echo", "openai", "gemini"],
)
def test_about_says_what_answers_in_exact_words(
    overrides: dict[str, str], about: dict[str, str]
) -> None:
    """What /health and the start-up line say; only the echo responder adds its note."""
    if about.get("responder") == "echo":
        about = about | {"note": ECHO_NOTE}
    assert load_settings(_env_file=None, **overrides).about() == about


@dataclass
class GeminiBits:
    model: str
    api_key: str
    label: str


@dataclass
class Unwired:
    model: str
    voice_name: str


def test_options_take_each_field_from_its_setting_or_what_is_given() -> None:
    settings = load_settings(_env_file=None, gemini_api_key="k-1", gemini_model="m-1")
    bits = settings.options(GeminiBits, "gemini_", label="x")
    assert bits == GeminiBits(model="m-1", api_key="k-1", label="x")  # the secret's value


def test_an_option_with_no_setting_is_refused_by_name() -> None:
    with pytest.raises(TypeError) as raised:
        load_settings(_env_file=None).options(Unwired, "gemini_")
    assert str(raised.value) == "Unwired.voice_name: no setting 'gemini_voice_name'"
