"""What ``talkline serve`` imports and prints before it serves: a start is mostly imports
(about 2 s here). Each check runs ``main`` in a fresh interpreter with the serving itself
stubbed out, so modules other tests loaded do not count."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SERVER = {"pipecat", "fastapi", "sqlalchemy", "onnxruntime", "google"}  # uvicorn: the stubs load it
STUBS = """
import uvicorn, talkline.supervisor  # neither imports Pipecat
talkline.supervisor.Supervisor.run = lambda self: 0
uvicorn.Server.run = lambda self, sockets=None: None
"""


def serve_stubbed(args: list[str], cwd: Path) -> tuple[set[str], str]:
    """``talkline serve ARGS`` up to the point where it would serve: the top-level packages
    (and talkline's modules) it imported, and what it logged."""
    code = (
        f"{STUBS}\nfrom talkline.__main__ import main\nmain(['serve', *{args!r}])\n"
        "import json, sys\nprint(json.dumps(sorted(sys.modules)))"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(cwd),
        "TALKLINE_HISTORY": "false",
        "TALKLINE_PIPER_URL": "http://127.0.0.1:9",  # no Piper started for this
    }
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=cwd, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    names = json.loads(done.stdout.strip().splitlines()[-1])
    modules = {name if name.startswith("talkline") else name.split(".")[0] for name in names}
    return modules, done.stderr


def test_the_supervisor_of_several_workers_imports_none_of_the_server(tmp_path: Path) -> None:
    # Each worker imports the server; the supervisor did too, before starting any worker
    # (two workers were ready about 2 s later for it, and it held ~150 MB it never used).
    loaded, _ = serve_stubbed(["--workers", "2", "--port", "5999"], tmp_path)
    assert "talkline.supervisor" in loaded  # the supervisor was reached
    assert not loaded & SERVER
    assert "talkline.app" not in loaded


@pytest.mark.parametrize("unused", ["faster_whisper", "ctranslate2", "onnx"])
def test_a_start_imports_whisper_and_the_converter_only_when_used(
    unused: str, tmp_path: Path
) -> None:
    # faster-whisper (Whisper is a setting; Moonshine is the default) and onnx (only to
    # convert Moonshine, once) cost ~0.4 s of every start when imported up front.
    loaded, _ = serve_stubbed(["--port", "5999"], tmp_path)
    assert "talkline.app" in loaded  # the app was built
    assert unused not in loaded


def test_a_start_prints_no_import_banner(tmp_path: Path) -> None:
    _, logged = serve_stubbed(["--port", "5999"], tmp_path)
    assert "talkline on http://" in logged  # the log was captured
    assert "Pipecat 1." not in logged
