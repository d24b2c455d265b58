"""What the wheel ships, and what optional commands say when their extra is missing."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from talkline.__main__ import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    out = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("talkline-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_the_wheel_ships_the_product_and_its_tools(wheel_names: set[str]) -> None:
    """The server, the built page, the emulator and the bench with its baseline bot."""
    for name in (
        "talkline/app.py",
        "talkline/web/dist/index.html",
        "talkline/web/dist/app.js",
        "talkline/emulator/server.py",
        "talkline/bench/baseline.py",
    ):
        assert name in wheel_names, name


def test_the_wheel_ships_no_test_tooling_or_js_project(wheel_names: set[str]) -> None:
    """No fakes, tests, JS sources, lockfile or build script: only the built page."""
    shipped_web = {name for name in wheel_names if name.startswith("talkline/web/")}
    assert shipped_web == {name for name in shipped_web if name.startswith("talkline/web/dist/")}
    assert not [name for name in wheel_names if name.startswith(("tests/", "talkline/testing/"))]
    assert not [name for name in wheel_names if "fake" in name]


@pytest.mark.parametrize(
    ("command", "missing", "extra"),
    [(["bench", "--quick"], "psutil", "bench"), (["emulate-gemini"], "cryptography", "emulator")],
)
def test_a_missing_extra_is_named_in_one_line(
    command: list[str],
    missing: str,
    extra: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without its extra, the command exits 2 with one line saying what to install."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a)
    )
    assert main(command) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f"talkline {command[0]} needs the '{extra}' extra ({missing} missing): "
        f"pip install 'talkline[{extra}]'"
    ]
