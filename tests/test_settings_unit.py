"""Settings in-process: the exact words of each refusal, secrets kept out of them."""

from __future__ import annotations

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
        ({"tts": "gemini"}, "stt=whisper, brain=local, tts=gemini"),
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
    }
    assert masked["port"] == 5000 and masked["brain"] == "auto"
