"""Settings: defaults, validation with one clear line, and secrets kept out of print."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import talkline
from talkline.config import SECRET_MASK, SettingsError, load_settings
from tests.support import distinctive, local_settings, secret_fields

# The CLI runs the same talkline this test imports (a worktree, or mutmut's mutants).
TALKLINE_PATH = str(Path(talkline.__file__).resolve().parents[1])


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "talkline", *args],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": TALKLINE_PATH, **env},
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
    assert settings.effective_stt == "moonshine"
    assert (settings.moonshine_model_path / "encoder_model.ort").is_file()
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


def test_every_secret_field_is_found() -> None:
    """The loop below covers the secrets known today, and any added later by type."""
    known = {"gemini_api_key", "api_keys", "token_secret", "deepgram_api_key",
             "elevenlabs_api_key", "llm_api_key"}  # fmt: skip
    assert known <= set(secret_fields())


def test_masked_settings_hold_no_secret_value() -> None:
    """Each secret, set to a value of its own, is the mask in ``masked()`` and nowhere else."""
    values = {name: distinctive(name) for name in secret_fields()}
    masked = local_settings(**values).masked()
    for name, value in values.items():
        assert masked[name] == SECRET_MASK and isinstance(masked[name], str), name
        assert value not in repr(masked) and value not in str(masked.values()), name


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "table"])
def test_config_command_prints_every_secret_masked(as_json: bool) -> None:
    env = {f"TALKLINE_{name.upper()}": distinctive(name) for name in secret_fields()}
    result = run_cli("config", *(["--json"] if as_json else []), env=env)
    assert result.returncode == 0, result.stderr
    printed = result.stdout + result.stderr
    for name, value in env.items():
        assert value not in printed, name
    shown = json.loads(result.stdout) if as_json else table(result.stdout)
    for name in secret_fields():
        assert shown[name] == SECRET_MASK, name


def table(output: str) -> dict[str, str]:
    """``talkline config``'s two columns: name, then the value after two spaces."""
    rows = (line.split(None, 1) for line in output.splitlines() if line.strip())
    return {row[0]: row[1] if len(row) > 1 else "" for row in rows}
