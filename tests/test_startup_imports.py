"""What a start imports: the server's start-up time is mostly imports (about 2 s here).

Each check runs in a fresh interpreter, so modules other tests loaded do not count.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SERVER = {"pipecat", "fastapi", "uvicorn", "sqlalchemy", "onnxruntime", "google"}


def packages_after(statement: str) -> set[str]:
    """The top-level packages, and talkline's modules, in ``sys.modules`` after ``statement``."""
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    names = json.loads(done.stdout.strip().splitlines()[-1])
    return {name if name.startswith("talkline") else name.split(".")[0] for name in names}


def test_the_supervisor_of_several_workers_imports_none_of_the_server() -> None:
    # Each worker imports the server; the supervisor did too, before starting any worker
    # (two workers were ready about 2 s later for it, and it held ~150 MB it never used).
    loaded = packages_after("import talkline.__main__, talkline.supervisor")
    assert not loaded & SERVER
    assert "talkline.app" not in loaded
    assert "talkline.supervisor" in loaded  # the check looks where it should


@pytest.mark.parametrize("unused", ["faster_whisper", "ctranslate2", "onnx"])
def test_the_server_imports_whisper_and_the_converter_only_when_used(unused: str) -> None:
    # faster-whisper (Whisper is a setting; Moonshine is the default) and onnx (only to
    # convert Moonshine, once) cost ~0.4 s of every start when imported up front.
    loaded = packages_after("import talkline.serve, talkline.app, talkline.resources")
    assert "talkline.resources" in loaded
    assert unused not in loaded
