"""A real PostgreSQL server for the history tests: Debian's binaries, a temp dir, a free port.

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user
(its data in a directory that user owns). It listens on 127.0.0.1 only and asks for a
password, like a real deployment.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PG_BIN = Path("/usr/lib/postgresql/15/bin")
START_TIMEOUT_SECS = 60.0
USER = "talkline"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster; ``stop()`` and ``start()`` again to take it away and back."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="talkline-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.password = secrets.token_hex(12)
        self.process: subprocess.Popen[bytes] | None = None
        self._as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            self._as_user = {"user": "postgres", "group": "postgres"}
            shutil.chown(self.root, "postgres", "postgres")
        self._init()

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://{USER}:{self.password}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, **self._as_user)

    def _init(self) -> None:
        password_file = self.root / "pw"
        password_file.write_text(self.password)
        if self._as_user:
            shutil.chown(password_file, "postgres", "postgres")
        self._run(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", USER,
            "--auth=scram-sha-256", f"--pwfile={password_file}", "--no-sync",
        )  # fmt: skip
        password_file.unlink()

    def start(self) -> None:
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the server writes to it
        self.process = subprocess.Popen(
            [
                str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-k", str(self.root), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
            ],
            stdout=log, stderr=log, **self._as_user,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_SECS
        while not self._accepting():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start: {self.log_tail()}")
            time.sleep(0.1)

    def _accepting(self) -> bool:
        ready = subprocess.run(
            [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
            capture_output=True,
        )
        return ready.returncode == 0

    def stop(self) -> None:
        """Fast shutdown: connections are cut, as when a database server goes away."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def log_tail(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()
