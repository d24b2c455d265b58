"""PNG plots: latency percentiles vs N, and server CPU and memory vs N (Gemini brain)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from talkline.bench.runner import RunResult

STYLES = {"talkline": "-", "baseline": "--"}
COLOURS = {"p50": "tab:blue", "p95": "tab:orange", "p99": "tab:red"}
MB = 2**20


def _series(results: list[RunResult], target: str) -> list[RunResult]:
    runs = [r for r in results if (r.target, r.brain) == (target, "gemini") and r.native]
    return sorted(runs, key=lambda r: r.sessions)


def _latency_panel(axis: Any, results: list[RunResult], title: str, pick: Callable) -> None:
    for target, style in STYLES.items():
        runs = _series(results, target)
        for level, colour in COLOURS.items():
            points = [(r.sessions, pick(r)[level]) for r in runs if pick(r)[level] is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                axis.plot(xs, ys, style, color=colour, marker="o", label=f"{target} {level}")
    axis.set_title(title)
    axis.set_xlabel("concurrent sessions")
    axis.set_ylabel("ms")
    axis.set_yscale("log")
    axis.grid(True, which="both", alpha=0.3)


def _resource_panel(axis: Any, results: list[RunResult], label: str, pick: Callable) -> None:
    for target, style in STYLES.items():
        runs = _series(results, target)
        if runs:
            axis.plot([r.sessions for r in runs], [pick(r) for r in runs], style, marker="o")
    axis.set_xlabel("concurrent sessions")
    axis.set_ylabel(label)
    axis.legend(list(STYLES), fontsize="small")
    axis.grid(True, alpha=0.3)


def draw(out: Path, results: list[RunResult]) -> list[Path]:
    """Write latency.png and resources.png under ``out``; none when no Gemini run exists."""
    if not any(r.brain == "gemini" for r in results):
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(17, 5))
    _latency_panel(axes[0], results, "response (end of speech → first bot audio)", _response)
    _latency_panel(axes[1], results, "server-added, inbound", _inbound)
    _latency_panel(axes[2], results, "server-added, outbound", _outbound)
    axes[0].legend(fontsize="small")
    figure.suptitle("Gemini brain, emulator in instant mode (solid: talkline, dashed: baseline)")
    figure.tight_layout()
    latency = out / "latency.png"
    figure.savefig(latency, dpi=90)
    plt.close(figure)

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    _resource_panel(axes[0], results, "server CPU (cores)", lambda r: r.server.cores)
    _resource_panel(axes[1], results, "server peak RSS (MB)", lambda r: r.server.rss_peak / MB)
    figure.suptitle("Server resources vs concurrent sessions (solid: talkline, dashed: baseline)")
    figure.tight_layout()
    resources = out / "resources.png"
    figure.savefig(resources, dpi=90)
    plt.close(figure)
    return [latency, resources]


def _response(result: RunResult) -> dict[str, float | None]:
    return result.summary.response


def _inbound(result: RunResult) -> dict[str, float | None]:
    return result.summary.inbound


def _outbound(result: RunResult) -> dict[str, float | None]:
    return result.summary.outbound
