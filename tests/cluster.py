"""A talkline cluster on one machine for tests: Redis, Gemini emulator, replicas, HAProxy.

Everything is a real process on 127.0.0.1 on a free port, with its files in one temporary
directory: Debian's ``redis-server``, ``talkline emulate-gemini``, N ``talkline serve``
replicas (Gemini brain against the emulator, one cap in Redis) and ``haproxy`` with the very
``deploy/haproxy.cfg`` operators use. Each piece can be stopped, killed and restarted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from tests.support import OnLoopback

ROOT = Path(__file__).resolve().parents[1]
HAPROXY_CONFIG = ROOT / "deploy" / "haproxy.cfg"
START_TIMEOUT_SECS = 120.0
STOP_TIMEOUT_SECS = 15.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(check: Callable[[], bool], what: str, timeout: float = START_TIMEOUT_SECS) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)


@dataclass
class Process:
    """One child process with its log file; stopped with SIGTERM, or killed."""

    name: str
    command: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None

    def start(self, stdout: int | IO[bytes] | None = None) -> None:
        with self.log.open("ab") as log:
            self.popen = subprocess.Popen(
                self.command,
                env=os.environ | self.env,
                stdin=subprocess.DEVNULL,
                stdout=stdout or log,
                stderr=log,
            )

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Send ``sig``, wait for the exit (SIGKILL after a while); the exit status."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(STOP_TIMEOUT_SECS)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def kill(self) -> None:
        """``kill -9``: no goodbye, no lease released."""
        self.stop(signal.SIGKILL)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


class RedisServer(Process):
    """Debian's redis-server, in memory only: a restart forgets every lease."""

    def __init__(self, directory: Path, port: int | None = None):
        self.port = port or free_port()
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(directory)]
        super().__init__("redis", command, directory / "redis.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, stdout: int | IO[bytes] | None = None) -> None:
        super().start(stdout)
        wait_for(self.answers, f"redis-server on port {self.port}")

    def answers(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
        return False


@contextlib.contextmanager
def running_redis(directory: Path) -> Iterator[RedisServer]:
    """A RedisServer started in ``directory``, stopped afterwards."""
    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class EmulatorProcess(Process):
    """``talkline emulate-gemini``: base URL and CA file read from what it prints."""

    def __init__(self, directory: Path):
        command = [sys.executable, "-m", "talkline", "emulate-gemini", "--cert-dir"]
        super().__init__("emulator", [*command, str(directory)], directory / "emulator.log")
        self.stdout = directory / "emulator.out"
        self.base_url = ""
        self.ca_file = ""

    def start(self, stdout: int | IO[bytes] | None = None) -> None:
        with self.stdout.open("wb") as out:
            super().start(out)
        wait_for(self._read_address, "the Gemini emulator's address")

    def _read_address(self) -> bool:
        for line in self.stdout.read_text().splitlines():
            if line.startswith("Gemini Live emulator: "):
                self.base_url = line.split(": ", 1)[1].strip()
            if line.startswith("CA certificate: "):
                self.ca_file = line.split(": ", 1)[1].strip()
        return bool(self.base_url and self.ca_file)


class Replica(Process, OnLoopback):
    """``talkline serve`` on its own port, with ``env`` as its settings."""

    def __init__(self, name: str, directory: Path, env: dict[str, str]):
        self.port = free_port()
        env = env | {"TALKLINE_PORT": str(self.port), "TALKLINE_REPLICA": name}
        command = [sys.executable, "-m", "talkline", "serve"]
        super().__init__(name, command, directory / f"{name}.log", env)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.http_url + path, timeout=5)

    def ready(self) -> bool:
        if not self.running:
            raise RuntimeError(f"{self.name} exited:\n{self.tail()}")
        with contextlib.suppress(httpx.HTTPError):
            return self.get("/ready").status_code == 200
        return False

    def health(self) -> dict[str, Any]:
        reply: dict[str, Any] = self.get("/health").json()
        return reply


class HAProxy(Process, OnLoopback):
    """``haproxy`` in the foreground with ``deploy/haproxy.cfg``, replicas from the env."""

    def __init__(self, directory: Path, replicas: list[Replica]):
        self.port, self.stats_port = free_port(), free_port()
        env = {
            "TALKLINE_PROXY_BIND": f"127.0.0.1:{self.port}",
            "TALKLINE_PROXY_STATS": f"127.0.0.1:{self.stats_port}",
        }
        env |= {f"TALKLINE_REPLICA_{i}": r.address for i, r in enumerate(replicas, 1)}
        command = ["haproxy", "-db", "-f", str(HAPROXY_CONFIG)]
        super().__init__("haproxy", command, directory / "haproxy.log", env)

    def start(self, stdout: int | IO[bytes] | None = None) -> None:
        super().start(stdout)
        wait_for(self.answers, "haproxy")

    def answers(self) -> bool:
        if not self.running:
            raise RuntimeError(f"haproxy exited:\n{self.tail()}")
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(self.http_url + "/health", timeout=5).status_code == 200
        return False

    def servers_up(self) -> set[str]:
        """The replicas HAProxy sends clients to now, from its status page."""
        page = httpx.get(f"http://127.0.0.1:{self.stats_port}/;csv", timeout=5).text
        rows = [line.split(",") for line in page.splitlines() if line.startswith("replicas,")]
        return {row[1] for row in rows if row[1] != "BACKEND" and row[17] == "UP"}


@dataclass
class Cluster:
    """The running pieces; ``proxy`` is where clients connect."""

    redis: RedisServer
    emulator: EmulatorProcess
    replicas: list[Replica]
    proxy: HAProxy

    def replica_env(self, settings: dict[str, Any]) -> dict[str, str]:
        env = {
            "TALKLINE_HOST": "127.0.0.1",
            "TALKLINE_BRAIN": "gemini",
            "GEMINI_API_KEY": "test-key",
            "TALKLINE_GEMINI_BASE_URL": self.emulator.base_url,
            "TALKLINE_GEMINI_CA_FILE": self.emulator.ca_file,
            "TALKLINE_REDIS_URL": self.redis.url,
        }
        return env | {f"TALKLINE_{name.upper()}": str(value) for name, value in settings.items()}

    def wait_ready(self, timeout: float = START_TIMEOUT_SECS) -> None:
        for replica in self.replicas:
            wait_for(replica.ready, f"{replica.name} /ready", timeout)

    def wait_proxied(self, timeout: float = 30.0) -> None:
        """Until HAProxy sends clients to every running replica."""
        running = {r.name for r in self.replicas if r.running}
        wait_for(lambda: self.proxy.servers_up() == running, "haproxy: every replica up", timeout)

    def sessions(self) -> dict[str, int]:
        """Live sessions on each running replica, from its /health."""
        return {r.name: r.health()["sessions"] for r in self.replicas if r.running}

    def stop(self) -> None:
        for process in [self.proxy, *self.replicas, self.emulator, self.redis]:
            process.stop()


@contextlib.contextmanager
def running_cluster(directory: Path, replicas: int = 3, **settings: Any) -> Iterator[Cluster]:
    """Redis, the emulator, ``replicas`` replicas with ``settings`` and HAProxy, all ready."""
    redis, emulator = RedisServer(directory), EmulatorProcess(directory)
    cluster = Cluster(redis, emulator, [], HAProxy(directory, []))
    try:
        redis.start()
        emulator.start()
        env = cluster.replica_env(settings)
        cluster.replicas = [Replica(f"replica{i}", directory, env) for i in range(1, replicas + 1)]
        for replica in cluster.replicas:
            replica.start()
        cluster.wait_ready()
        cluster.proxy = HAProxy(directory, cluster.replicas)
        cluster.proxy.start()
        cluster.wait_proxied()
        yield cluster
    finally:
        cluster.stop()


def token_for(http_url: str, api_key: str) -> str:
    """A /ws token from POST /connect with ``api_key`` (any replica's token works on all)."""
    reply = httpx.post(
        http_url + "/connect", json={}, headers={"Authorization": f"Bearer {api_key}"}, timeout=10
    )
    reply.raise_for_status()
    token: str = reply.json()["token"]
    return token
