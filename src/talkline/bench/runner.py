"""One load run: start the emulator and a server, run N clients, collect everything measured."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from talkline.bench.analysis import TurnSummary, summarise
from talkline.bench.loadgen import LoadResult, run_load
from talkline.bench.procs import ProcessMonitor, Usage, emulator, machine_busy_secs, server
from talkline.bench.speech import Plan
from talkline.processes import free_port

Target = Literal["talkline", "baseline"]
Brain = Literal["gemini", "local"]
SETTLE_SECS = 0.5
REPLY_SECONDS = 1.2


@dataclass
class RunResult:
    """Everything one run measured; what the report and the plots are made of."""

    target: Target
    brain: Brain
    sessions: int
    turns: int
    ready_secs: float
    server: Usage
    clients_cores: float
    emulator_cores: float | None
    loop_lag_p99_ms: float
    loop_lag_max_ms: float
    connect_secs: float
    summary: TurnSummary
    workers: int = 1  # talkline worker processes (TALKLINE_WORKERS)
    machine_cores: float | None = None  # the whole machine's busy cores over the run
    rss_per_session_mb: float | None = None
    client_format: str = "16000x1"  # rate x channels of the audio the clients sent
    notes: list[str] = field(default_factory=list)

    @property
    def native(self) -> bool:
        """The clients sent 16 kHz mono, the format every other run is compared in."""
        return self.client_format == "16000x1"


def server_command(target: Target, port: int, baseline_bot: Path) -> list[str]:
    if target == "baseline":
        return [sys.executable, str(baseline_bot), "--port", str(port)]
    return [sys.executable, "-m", "talkline", "serve", "--host", "127.0.0.1", "--port", str(port)]


def server_env(target: Target, brain: Brain, sessions: int, workers: int = 1) -> dict[str, str]:
    if target == "baseline":
        return {}
    env = {
        "TALKLINE_WORKERS": str(workers),
        "TALKLINE_BRAIN": brain,
        "TALKLINE_HOST": "127.0.0.1",
        "TALKLINE_LOG_LEVEL": "WARNING",
        "TALKLINE_MAX_SESSIONS": str(max(100, sessions + 10)),
        "TALKLINE_MAX_SESSIONS_PER_CLIENT": str(sessions + 10),  # every client is 127.0.0.1
    }
    if brain == "gemini":
        env["GEMINI_API_KEY"] = "bench-key"
    return env


def upstream_flags(target: Target, base_url: str, ca_file: str) -> tuple[list[str], dict[str, str]]:
    """How the server is pointed at the emulator: flags for the baseline, env for talkline."""
    if target == "baseline":
        return ["--gemini-base-url", base_url, "--ca-file", ca_file], {}
    return [], {"TALKLINE_GEMINI_BASE_URL": base_url, "TALKLINE_GEMINI_CA_FILE": ca_file}


@dataclass
class Measured:
    load: LoadResult
    server: Usage
    clients: Usage
    emulator: Usage | None
    machine_cores: float


async def _measure(
    url: str, server_pid: int, emulator_pid: int | None, sessions: int, plan: Plan, tagged: bool
) -> Measured:
    monitors = [ProcessMonitor(server_pid), ProcessMonitor(os.getpid(), children=False)]
    if emulator_pid is not None:
        monitors.append(ProcessMonitor(emulator_pid))
    await asyncio.sleep(SETTLE_SECS)
    for monitor in monitors:
        monitor.start()
    busy, started = machine_busy_secs(), time.monotonic()
    load = await run_load(url, sessions, plan, tagged=tagged)
    machine = (machine_busy_secs() - busy) / max(time.monotonic() - started, 1e-9)
    usages = [await monitor.stop() for monitor in monitors]
    emulated = usages[2] if emulator_pid is not None else None
    return Measured(load, usages[0], usages[1], emulated, machine)


async def run_once(
    target: Target,
    brain: Brain,
    sessions: int,
    plan: Plan,
    *,
    baseline_bot: Path,
    logs: Path,
    workers: int = 1,
) -> RunResult:
    """Start fresh processes, run ``sessions`` clients through ``plan``, and measure.

    Only 16 kHz mono chunks are tagged: the server resamples other formats, which the tags
    would not survive, so their runs have no inbound or outbound figures."""
    port = free_port()
    tagged = plan.format.native
    command = server_command(target, port, baseline_bot)
    workers = workers if target == "talkline" else 1
    env = server_env(target, brain, sessions, workers)
    suffix = f"-w{workers}" if workers > 1 else ""
    log = logs / f"{target}-{brain}-{sessions}-{plan.format}{suffix}.log"
    records = None
    with tempfile.TemporaryDirectory(prefix="talkline-bench-") as tmp:
        if brain == "gemini":
            async with emulator(Path(tmp) / "records.json", reply_seconds=REPLY_SECONDS) as emu:
                flags, extra = upstream_flags(target, emu.base_url, emu.ca_file)
                async with server(command + flags, env | extra, port, log) as srv:
                    measured = await _measure(
                        srv.ws_url, srv.process.pid, emu.process.pid, sessions, plan, tagged
                    )
                    ready = srv.ready_secs
                records = await emu.finish()
        else:
            async with server(command, env, port, log) as srv:
                measured = await _measure(srv.ws_url, srv.process.pid, None, sessions, plan, False)
                ready = srv.ready_secs
    load = measured.load
    lags = np.asarray(load.loop_lag or [0.0]) * 1000
    return RunResult(
        target=target,
        brain=brain,
        sessions=sessions,
        turns=len(plan.turns),
        ready_secs=ready,
        server=measured.server,
        clients_cores=measured.clients.cores,
        emulator_cores=measured.emulator.cores if measured.emulator else None,
        loop_lag_p99_ms=float(np.percentile(lags, 99)),
        loop_lag_max_ms=float(lags.max()),
        connect_secs=load.connect_secs,
        summary=summarise(load.clients, plan, records if tagged else None),
        client_format=str(plan.format),
        workers=workers,
        machine_cores=measured.machine_cores,
    )
