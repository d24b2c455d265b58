"""`talkline bench`: a real quick run, plus the two pieces of arithmetic it rests on."""

from __future__ import annotations

import json
from pathlib import Path

from talkline.bench import main
from talkline.bench.analysis import playback_gaps
from talkline.bench.speech import CHUNK_BYTES, find_tags, tag

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_tags_survive_rechunking() -> None:
    """Tags are found wherever the server cuts or joins the chunks it forwards."""
    chunks = [tag(bytes(CHUNK_BYTES), client=7, seq=seq) for seq in (0, 1, 1234)]
    joined = b"".join(chunks)
    assert find_tags(joined) == [(7, 0), (7, 1), (7, 1234)]
    assert find_tags(joined[CHUNK_BYTES // 2 :]) == [(7, 1), (7, 1234)]


def test_playback_gap_counts_only_underruns_past_100_ms() -> None:
    """Audio arriving early or on time is fine; a frame 150 ms after the buffer ran dry is not."""
    frame = 2 * 2400  # 100 ms at 24 kHz
    times = [0.0, 0.0, 0.15, 0.45]  # buffer holds until 0.2 s; the last frame is 0.15 s late
    glitches, longest = playback_gaps(times, [frame] * 4)
    assert glitches == 1
    assert abs(longest - 0.15) < 1e-9


def test_quick_bench_writes_report_and_plots(tmp_path: Path) -> None:
    """One session, one turn against a real talkline server and emulator: a report with numbers."""
    status = main(
        ["--quick", "--brain", "gemini", "--sessions", "1", "--no-baseline", "--out", str(tmp_path)]
    )

    assert status == 0
    report = (tmp_path / "report.md").read_text()
    assert any(line.startswith("| talkline | 1 | 1/1 |") for line in report.splitlines())
    run = json.loads((tmp_path / "results.json").read_text())["runs"][0]
    assert run["sessions"] == 1
    for measure in ("response", "inbound", "outbound"):
        assert run["summary"][measure]["p50"] > 0
    assert run["server"]["rss_peak"] > 0
    for image in ("latency.png", "resources.png"):
        assert (tmp_path / image).read_bytes().startswith(PNG_MAGIC)
