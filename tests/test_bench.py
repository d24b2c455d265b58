"""`talkline bench`: a real quick run, plus the pieces of arithmetic it rests on."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from talkline.audio import RATE, peak, silence, write_wav
from talkline.bench import cli, main
from talkline.bench.analysis import TurnMeasure, TurnSummary, TurnTimes, by_turn, playback_gaps
from talkline.bench.cli import parse_workers_run
from talkline.bench.human_speech import COMPLETE
from talkline.bench.procs import Usage, machine_busy_secs
from talkline.bench.report import (
    MB,
    capacity_target_rows,
    knees,
    local_rows,
    offline_heading,
    offline_speech_lines,
)
from talkline.bench.runner import RunResult, Target
from talkline.bench.speech import (
    CHUNK_BYTES,
    CHUNK_SECS,
    ClientFormat,
    Plan,
    Speech,
    find_tags,
    make_plan,
    reformat,
    tag,
)
from talkline.services.turn_models import SILENCE_PEAK
from tests.support import local_settings

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_tags_survive_rechunking() -> None:
    """Tags are found wherever the server cuts or joins the chunks it forwards."""
    chunks = [tag(bytes(CHUNK_BYTES), client=157, seq=seq) for seq in (0, 1, 1234, 98765)]
    joined = b"".join(chunks)
    assert find_tags(joined) == [(157, 0), (157, 1), (157, 1234), (157, 98765)]
    assert find_tags(joined[CHUNK_BYTES // 2 :]) == [(157, 1), (157, 1234), (157, 98765)]


def test_tags_are_too_quiet_for_the_speech_gate_to_score() -> None:
    """A tagged silent chunk stays below the level at which the server calls Silero."""
    loudest = max(
        peak(tag(bytes(CHUNK_BYTES), client=client, seq=seq))
        for client in (0, 1, 148, 149, 5000)
        for seq in (0, 148, 149, 22_000, 3_000_000)
    )
    assert loudest < SILENCE_PEAK


def test_playback_gap_counts_only_underruns_past_100_ms() -> None:
    """Audio arriving early or on time is fine; a frame 150 ms after the buffer ran dry is not."""
    frame = 2 * 2400  # 100 ms at 24 kHz
    times = [0.0, 0.0, 0.15, 0.45]  # buffer holds until 0.2 s; the last frame is 0.15 s late
    glitches, longest = playback_gaps(times, [frame] * 4)
    assert glitches == 1
    assert abs(longest - 0.15) < 1e-9


def test_a_plan_in_another_format_keeps_its_chunks_and_turns() -> None:
    """48 kHz stereo: as many chunks, each 32 ms of two channels, with the same voiced turns."""
    speech = bytes(3200) + np.full(16000, 3000, dtype=np.int16).tobytes() + bytes(3200)
    plan = make_plan(speech, 2, 0.5)
    # 0.1 s of quiet, then 1 s of sound: chunks 3 to 34 of each turn hold some of it
    turn = len(plan.chunks) // 2
    assert [(t.first_voiced, t.last_voiced) for t in plan.turns] == [(3, 34), (turn + 3, turn + 34)]
    stereo = reformat(plan, ClientFormat.parse("48000x2"))
    assert len(stereo.chunks) == len(plan.chunks) and stereo.turns == plan.turns
    assert {len(chunk) for chunk in stereo.chunks} == {1536 * 2 * 2}
    assert str(stereo.format) == "48000x2" and not stereo.format.native
    odd = reformat(plan, ClientFormat(44100, 1))
    assert sum(len(c) for c in odd.chunks) // 2 == round(len(plan.chunks) * CHUNK_SECS * 44100)


def loud(seconds: float) -> bytes:
    return np.full(int(seconds * RATE), 3000, dtype=np.int16).tobytes()


def test_a_plan_of_several_clips_speaks_them_in_turn() -> None:
    """Two clips, three turns: the second turn is the second clip, the third the first again;
    each turn spans its own clip and the gap, and is voiced where its own clip has sound."""
    short = silence(0.1) + loud(0.5) + silence(0.1)  # 22 chunks, sound in chunks 3-18
    long = silence(0.2) + loud(1.0) + silence(0.05)  # 40 chunks, sound in chunks 6-37
    plan = make_plan([short, long], 3, 0.5)  # the gap: 16 chunks
    spans = [(t.first, t.first_voiced, t.last_voiced, t.end) for t in plan.turns]
    assert spans == [(0, 3, 18, 38), (38, 44, 75, 94), (94, 97, 112, 132)]
    assert len(plan.chunks) == 132
    assert b"".join(plan.chunks[38:78]) == long + bytes(-len(long) % CHUNK_BYTES)
    assert make_plan(short, 2, 0.5).turns == make_plan([short], 2, 0.5).turns
    with pytest.raises(ValueError, match="clip 1 has no voiced chunk"):
        make_plan([short, silence(1.0)], 2, 0.5)


def test_quick_bench_writes_report_and_plots(tmp_path: Path) -> None:
    """One session, one turn against a real talkline server and emulator, for 16 kHz mono and
    48 kHz stereo clients: a report with numbers, and CPU per session for both formats."""
    status = main(
        ["--quick", "--brain", "gemini", "--sessions", "1", "--no-baseline", "--out", str(tmp_path),
         "--client-format", "16000x1,48000x2"]
    )  # fmt: skip

    assert status == 0
    report = (tmp_path / "report.md").read_text().splitlines()
    assert any(line.startswith("| talkline | 1 | 16000x1 | 1/1 |") for line in report)
    assert any(line.startswith("| talkline | 1 | 48000x2 | 1/1 |") for line in report)
    cpu_rows = [line for line in report if line.startswith(("| 1 | 16000x1 |", "| 1 | 48000x2 |"))]
    assert len(cpu_rows) == 2, report
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert [run["client_format"] for run in runs] == ["16000x1", "48000x2"]
    native, stereo = runs
    for measure in ("response", "inbound", "onset", "outbound"):
        assert native["summary"][measure]["p50"] > 0
    assert stereo["summary"]["response"]["p50"] > 0
    assert native["server"]["rss_peak"] > 0 and stereo["server"]["samples"]
    for r in runs:  # the whole machine: at least the server and the clients, at most every core
        server_cores = r["server"]["cpu_secs"] / r["server"]["wall_secs"]
        assert 0.8 * (server_cores + r["clients_cores"]) <= r["machine_cores"]
        assert r["machine_cores"] <= (os.cpu_count() or 1) + 0.05
    assert any("| machine busy (cores) |" in line for line in report)
    for image in ("latency.png", "resources.png"):
        assert (tmp_path / image).read_bytes().startswith(PNG_MAGIC)


def run(sessions: int, *, inbound_p95: float, cpu: float, target: Target = "talkline") -> RunResult:
    """A Gemini run of ``sessions`` whose server used ``cpu`` cores, with every turn answered."""
    p: dict[str, float | None] = {"p50": 5.0, "p95": inbound_p95, "p99": inbound_p95}
    out: dict[str, float | None] = {"p50": 5.0, "p95": 10.0, "p99": 10.0}
    summary = TurnSummary(6, 6, dict(out), p, out, 0, 0.0, 0, [])
    usage = Usage(cpu_secs=cpu * 10, wall_secs=10.0, rss_start=100 * MB, rss_peak=100 * MB)
    result = RunResult(target, "gemini", sessions, 3, 1.0, usage, 0.1, 0.1, 1.0, 2.0, 1.0, summary)
    result.rss_per_session_mb = 1.0
    return result


def test_knee_is_the_largest_n_before_the_first_miss() -> None:
    """N=30 misses inbound p95 < 20 ms: the knee is 20 even though N=40 happens to pass."""
    runs = [
        run(10, inbound_p95=4.0, cpu=0.2),
        run(20, inbound_p95=8.0, cpu=0.5),
        run(30, inbound_p95=25.0, cpu=0.8),
        run(40, inbound_p95=9.0, cpu=1.0),
        run(10, inbound_p95=30.0, cpu=0.7, target="baseline"),
    ]
    found = {k.label: k for k in knees(runs)}
    talkline = found["talkline"]
    assert (talkline.largest_ok, talkline.first_missed) == (20, 30)
    assert abs((talkline.cpu_per_session or 0) - 0.025) < 1e-9
    assert abs((talkline.sessions_per_core or 0) - 40) < 1e-9
    baseline = found["**baseline**"]
    assert (baseline.largest_ok, baseline.first_missed) == (None, 10)
    assert abs((baseline.sessions_per_core or 0) - 1 / 0.07) < 1e-9


def test_capacity_targets_judge_cpu_against_the_same_runs_baseline_and_sessions_held() -> None:
    """talkline 0.3 / 0.9 cores at N=10 (0.33x) and 0.5 / 1.2 at N=20 (0.42x): missed; 40 in
    one process met; two workers at 60 with an outbound p95 of 25 ms: missed."""
    two_workers = run(60, inbound_p95=5.0, cpu=1.0)
    two_workers.workers = 2
    two_workers.summary.outbound["p95"] = 25.0
    runs = [
        run(10, inbound_p95=4.0, cpu=0.3),
        run(20, inbound_p95=4.0, cpu=0.5),
        run(40, inbound_p95=9.0, cpu=0.8),
        two_workers,
        run(10, inbound_p95=4.0, cpu=0.9, target="baseline"),
        run(20, inbound_p95=4.0, cpu=1.2, target="baseline"),
    ]
    runs[5].summary.answered = 3  # the baseline fell behind at N=20: the report says so
    verdicts = {None: "-", True: "met", False: "missed"}
    cpu, one, several = capacity_target_rows(runs, verdicts.get)
    assert "N=10: 0.33x, N=20: 0.42x (baseline saturated: 3/6 turns)" in cpu
    assert cpu.endswith("| missed |")
    assert one.endswith("| met |") and "6/6 turns" in one
    assert several.startswith("| 2 workers hold 60") and several.endswith("| missed |")
    assert "out 25 ms" in several
    runs[5] = run(20, inbound_p95=4.0, cpu=1.5, target="baseline")  # 0.33x: both N now pass
    assert capacity_target_rows(runs, lambda ok: str(ok))[0].endswith("| True |")
    assert capacity_target_rows(runs[:3], lambda ok: str(ok))[0].endswith("| None |")


def test_workers_run_is_read_as_workers_and_sessions() -> None:
    assert parse_workers_run(" 2:60") == (2, 60)
    for bad in ("2x60", "two:60", "0:60"):
        with pytest.raises(SystemExit, match="--workers-run"):
            parse_workers_run(bad)


async def test_the_bots_take_turns_at_each_n_and_a_collapsed_one_stops(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """talkline and the baseline alternate N by N (a ratio compares runs minutes apart); the
    baseline, no longer conversational at N=20, is not run at 40; the report lists each bot's
    runs together."""
    calls: list[tuple[str, int]] = []

    async def fake_attempt(target: Target, brain: str, sessions: int, *args: object) -> RunResult:
        calls.append((target, sessions))
        result = run(sessions, inbound_p95=4.0, cpu=0.1 * sessions, target=target)
        if target == "baseline" and sessions >= 20:
            result.summary.answered = 0  # collapsed
        return result

    monkeypatch.setattr(cli, "attempt", fake_attempt)
    options = cli.options_from(
        cli.build_parser("bench").parse_args(
            ["--brain", "gemini", "--sessions", "10,20,40", "--out", str(tmp_path)]
        )
    )
    voiced = (np.sin(np.arange(CHUNK_BYTES * 20) / 5) * 8000).astype(np.int16).tobytes()
    results = await cli.sweep(options, voiced, Speech("test", [voiced], ["test"]))
    assert calls == [
        ("talkline", 10), ("baseline", 10), ("talkline", 20), ("baseline", 20), ("talkline", 40)
    ]  # fmt: skip
    assert [(r.target, r.sessions) for r in results] == [
        ("talkline", 10), ("talkline", 20), ("talkline", 40), ("baseline", 10), ("baseline", 20)
    ]  # fmt: skip
    assert results[-1].notes == ["sweep stopped here: no longer conversational"]


def test_the_offline_heading_names_the_stages_that_ran() -> None:
    """The offline rows say which recognizer, responder and voice answered (the heading had
    named Whisper after Moonshine became the default)."""
    heading = offline_heading(local_settings())
    assert heading == "## Offline brain (Moonshine + echo + Piper), one session"
    assert "(Whisper + echo + Piper)" in offline_heading(local_settings(stt="whisper"))


def test_the_machines_busy_time_counts_this_process_work() -> None:
    """What the machine-busy column is made of: every core's non-idle time, ours included."""
    busy, ours = machine_busy_secs(), time.process_time()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    assert machine_busy_secs() - busy >= 0.9 * (time.process_time() - ours)


def test_local_speech_human_picks_the_recordings_one_per_turn(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``--local-speech human``: the offline run speaks each complete recording in turn (here
    stand-ins of different lengths), their room tone cut, after the lead; its turns default to
    one per recording. Piper stays the default."""
    recordings, tail = [], len(silence(0.2))
    for n, (member, _) in enumerate(COMPLETE):
        pcm = silence(0.1) + loud(0.2 + 0.05 * n) + silence(0.3)
        recordings.append(pcm)
        path = tmp_path / member
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".wav":
            write_wav(path, pcm, RATE)
        else:
            path.write_bytes(pcm)
    monkeypatch.setattr(cli, "recordings_folder", lambda cache: tmp_path)
    monkeypatch.setattr(cli, "without_tail", lambda pcm: pcm[:-tail])

    def options(*args: str) -> cli.Options:
        return cli.options_from(cli.build_parser("bench").parse_args(["--brain", "local", *args]))

    human = options("--local-speech", "human")
    assert (human.local_speech, human.local_turns) == ("human", len(COMPLETE))
    assert options("--local-speech", "human", "--local-turns", "20").local_turns == 20
    assert (options().local_speech, options().local_turns) == ("piper", 5)
    speech = cli.offline_speech(human, piper=b"not used")
    assert speech.clips == [silence(cli.LEAD_SECS) + pcm[:-tail] for pcm in recordings]
    assert speech.names[4] == 'cards/001.wav "Ten of clubs."'
    assert "recordings of people" in speech.about
    piper = cli.offline_speech(options(), piper=loud(1.0))
    assert piper.clips == [loud(1.0)] and "Piper" in piper.about


async def test_the_offline_run_speaks_the_offline_speech(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The offline run's plan is made of the offline speech's clips, one per turn; the Gemini
    runs keep the Piper sentence."""
    plans: dict[str, Plan] = {}

    async def fake_attempt(
        target: Target, brain: str, sessions: int, plan: Plan, *args: object
    ) -> None:
        plans[brain] = plan
        return None

    monkeypatch.setattr(cli, "attempt", fake_attempt)
    options = cli.options_from(
        cli.build_parser("bench").parse_args(
            ["--sessions", "1", "--no-baseline", "--local-turns", "3", "--out", str(tmp_path)]
        )
    )
    piper, first, second = loud(1.0), loud(0.2), loud(0.5)
    await cli.sweep(options, piper, Speech("two clips", [first, second], ["first", "second"]))
    assert plans["local"].chunks == make_plan([first, second], 3, options.local_gap).chunks
    assert plans["gemini"].chunks == make_plan(piper, options.turns, options.gap).chunks


def test_the_offline_rows_give_p90_and_each_turns_recording() -> None:
    """The offline row has the response p90 (the issue's target is median and p90); with
    several clips, a row per turn names what was said and its times."""
    result = run(1, inbound_p95=4.0, cpu=0.5)
    result.brain = "local"
    result.summary.response = {"p50": 480.0, "p90": 910.0, "p95": 990.0, "p99": 999.0, "max": 1e3}
    result.summary.turns = [TurnTimes(480.0, 470.0), TurnTimes(None, None), TurnTimes(910.0, 800.0)]
    assert "| 480 / 910 / 990 / 1,000 |" in local_rows([result])[-1]
    speech = Speech("recordings", [loud(0.2), loud(0.3)], ["a.wav", "b.wav"])
    lines = offline_speech_lines([result], speech)
    assert lines[0] == "Speech: recordings."
    assert lines[-3:] == [
        "| 16000x1 | 1 | a.wav | 480 | 470 |",
        "| 16000x1 | 2 | b.wav | n/a | n/a |",
        "| 16000x1 | 3 | a.wav | 910 | 800 |",
    ]
    assert offline_speech_lines([result], Speech("Piper", [loud(0.2)], ["Piper"])) == [
        "Speech: Piper."
    ]


def test_each_turns_times_are_the_median_over_the_clients_that_reached_it() -> None:
    """Turn by turn, over the clients: an unanswered turn counts for its turn detection only;
    a turn no client reached has no times."""
    clients = [
        [TurnMeasure(response=0.4, turn_detected=0.3), TurnMeasure(response=1.0)],
        [TurnMeasure(response=0.6, turn_detected=0.5), TurnMeasure(turn_detected=0.9)],
        [TurnMeasure(response=0.8)],
    ]
    assert by_turn(clients, 3) == [
        TurnTimes(600.0, 400.0),
        TurnTimes(1000.0, 900.0),
        TurnTimes(None, None),
    ]
