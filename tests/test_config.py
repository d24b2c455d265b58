"""Settings: defaults, validation with one clear line, and secrets kept out of print."""

from __future__ import annotations

import subprocess
import sys

import pytest

from talkline.config import SettingsError, load_settings


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "talkline", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_defaults_are_the_offline_brain_with_echo() -> None:
    settings = load_settings(_env_file=None)
    assert settings.port == 5000
    assert settings.effective_brain == "local"
    assert settings.effective_responder == "echo"
    assert settings.max_sessions == 100 and settings.session_timeout == 600
    assert settings.whisper_model_path.endswith("model")
    assert settings.piper_voice_path.name == "en_US-joe-medium.onnx"


def test_gemini_key_selects_the_gemini_brain() -> None:
    settings = load_settings(_env_file=None, gemini_api_key="k-123")
    assert settings.effective_brain == "gemini"


def test_llm_base_url_selects_the_openai_responder() -> None:
    settings = load_settings(_env_file=None, llm_base_url="http://127.0.0.1:11434/v1")
    assert settings.effective_responder == "openai"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"port": "abc"}, "TALKLINE_PORT"),
        ({"max_sessions": 0}, "TALKLINE_MAX_SESSIONS"),
        ({"brain": "cloud"}, "TALKLINE_BRAIN"),
        ({"audio_in_rate": 44100}, "TALKLINE_AUDIO_IN_RATE"),
    ],
)
def test_invalid_values_name_the_setting(override: dict[str, object], expected: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(_env_file=None, **override)
    assert expected in str(raised.value)
    assert "\n" not in str(raised.value)


def test_invalid_setting_stops_the_cli_with_exit_2_and_one_line() -> None:
    result = run_cli("config", env={"TALKLINE_MAX_SESSIONS": "-3"})
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and "TALKLINE_MAX_SESSIONS" in lines[0]
    assert "greater than or equal to 1" in lines[0]


def test_config_masks_secrets() -> None:
    secret = "AIzaSy-very-secret-value"
    llm_secret = "sk-another-secret"
    result = run_cli(
        "config", "--json", env={"GEMINI_API_KEY": secret, "TALKLINE_LLM_API_KEY": llm_secret}
    )
    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout + result.stderr
    assert llm_secret not in result.stdout + result.stderr
    assert '"gemini_api_key": "**********"' in result.stdout
