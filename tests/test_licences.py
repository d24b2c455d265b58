"""Piper is GPL-3.0: it must never load into talkline's own (MIT) process."""

from __future__ import annotations

import subprocess
import sys

from tests.support import ServerThread

GPL_MODULES = ("piper",)


def loaded_gpl_modules(modules: list[str]) -> list[str]:
    return [m for m in modules if m.split(".")[0] in GPL_MODULES]


def test_importing_every_talkline_module_loads_no_piper() -> None:
    """A fresh interpreter that imports all of talkline has no piper module loaded."""
    code = (
        "import sys, pkgutil, importlib, talkline\n"
        "for m in pkgutil.walk_packages(talkline.__path__, 'talkline.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "print('\\n'.join(sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert "talkline.pipelines.build" in result.stdout
    assert loaded_gpl_modules(result.stdout.splitlines()) == []


def test_a_served_session_loads_no_piper(server: ServerThread) -> None:
    """After the server has started Piper and served sessions, piper is still not imported."""
    assert server.shared.piper is not None and server.shared.piper.pid is not None
    assert loaded_gpl_modules(list(sys.modules)) == []
