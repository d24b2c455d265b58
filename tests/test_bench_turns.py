"""The turn-taking benchmark's rules: when each strategy ends a turn, and what a cut-off is."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from pipecat.audio.vad.vad_analyzer import VADState

from talkline.audio import silence
from talkline.bench.turn_corpus import HELD_OUT, HUMAN, TUNING, Utterance
from talkline.bench.turns import (
    BEFORE_HOLD,
    EARLY_STT_AT_SECS,
    FLOORS,
    NO_ONSET_HOLD,
    NO_SPECULATION,
    Outcome,
    Pause,
    Rows,
    Transcriber,
    against_today,
    chosen_floor,
    floor_label,
    goal_met,
    outcome,
    summary,
    transcript_in,
    turn_end,
    vad_pauses,
    variants,
)
from talkline.bench.turns_cli import write_report
from talkline.pipelines.build import TRANSCRIPT_WAIT_SECS
from talkline.services.turn_taking import ONSET_RECHECK_SECS, TurnWaits

WAITS = TurnWaits(min_pause_secs=0.0)  # the rules themselves, floor aside


def pause(text: str, probability: float, resumed: float | None = None) -> Pause:
    """A pause 1 s into the audio, scored and transcribed in 0.1 s."""
    return Pause(1.0, 1.2, resumed, probability, 0.1, text, 0.1)


def test_smart_turn_unsure_of_a_complete_sentence_waits_three_seconds_alone() -> None:
    """Smart Turn alone waits its 3 s; the transcript strategy ends after the disputed pause."""
    quiet = pause("Tell me a joke about cats.", probability=0.2)
    assert turn_end("smart_turn", quiet, WAITS) == 1.0 + 3.0
    assert turn_end("transcript", quiet, WAITS) == 1.0 + WAITS.disputed_pause_secs
    assert turn_end("silence", quiet, WAITS) == 1.2 + 0.6


def test_smart_turn_at_exactly_one_half_is_not_done_as_in_pipecat() -> None:
    """Pipecat's Smart Turn says complete above 0.5: at 0.5 it waits its 3 s."""
    assert turn_end("smart_turn", pause("Tell me a joke.", probability=0.5), WAITS) == 4.0
    assert turn_end("smart_turn", pause("Tell me a joke.", probability=0.51), WAITS) == 1.3


def test_an_unfinished_clause_is_held_although_smart_turn_says_done() -> None:
    held = pause("Set an alarm for.", probability=0.9)
    assert turn_end("smart_turn", held, WAITS) == 1.3
    assert turn_end("transcript", held, WAITS) == 1.0 + WAITS.unfinished_pause_secs


def test_a_turn_ended_before_the_user_resumes_is_a_cut_off() -> None:
    """Ending at the first pause, 0.5 s before speech resumes, cuts the user off."""
    utterance = Utterance("paused", "Set an alarm for … six.", "piper x1", False, silence(1))
    first = pause("Set an alarm", probability=0.9, resumed=1.8)
    last = Pause(3.0, 3.2, None, 0.9, 0.1, "Six.", 0.1)
    cut = outcome(utterance, "moonshine", "smart_turn", [first, last], WAITS)
    assert cut.cut_off and cut.latency is not None
    held = outcome(
        utterance, "moonshine", "transcript", [pause("Set an alarm for", 0.9, 1.8), last], WAITS
    )
    assert not held.cut_off and held.latency is not None
    assert abs(held.latency - WAITS.complete_pause_secs) < 1e-9
    rows = summary([cut, held], tts_secs=0.2)
    assert {row["strategy"]: row["cut_off_paused"] for row in rows} == {
        "smart_turn": "1/1",
        "transcript": "0/1",
    }
    median = round((WAITS.complete_pause_secs + 0.2) * 1000)
    assert [row["median_ms"] for row in rows if row["strategy"] == "transcript"] == [median]


def test_no_turn_ends_before_any_words_are_heard() -> None:
    """An empty transcript at the first pause (Smart Turn sure it is done) does not end the
    turn, as in the server; a turn with no words at all ends at the pipeline's timeout."""
    utterance = Utterance("paused", "Set an alarm for … six.", "espeak", True, silence(1))
    first = pause("", probability=0.9, resumed=1.8)
    last = Pause(3.0, 3.2, None, 0.9, 0.1, "Six in the morning.", 0.1)
    for strategy in ("silence", "smart_turn", "transcript"):
        result = outcome(utterance, "moonshine", strategy, [first, last], WAITS)
        assert not result.cut_off, strategy
    mute = Pause(3.0, 3.2, None, 0.9, 0.1, "", 0.1)
    result = outcome(utterance, "moonshine", "transcript", [first, mute], WAITS)
    assert not result.cut_off and result.latency == TRANSCRIPT_WAIT_SECS


def test_outcomes_name_their_strategy() -> None:
    utterance = Utterance("complete", "Yes.", "piper x1", False, silence(1))
    result = outcome(utterance, "whisper", "silence", [pause("Yes.", 0.9)], WAITS)
    assert isinstance(result, Outcome) and result.strategy == "silence" and not result.cut_off


def test_the_floor_holds_the_transcript_strategy_and_only_it() -> None:
    """A 0.9 s floor: the transcript strategy ends no sooner than 0.9 s after the speech,
    whatever its rule says; Smart Turn alone and silence run as Pipecat's, floor aside."""
    floored = replace(WAITS, min_pause_secs=0.9)
    done = pause("I'd like a table.", probability=0.9)
    assert turn_end("transcript", done, floored) == 1.0 + 0.9
    assert turn_end("transcript", done, WAITS) == 1.0 + WAITS.complete_pause_secs
    assert turn_end("smart_turn", done, floored) == 1.3
    unsure = pause("I'd like a table.", probability=0.2)
    assert turn_end("transcript", unsure, floored) == 1.0 + 0.9
    later = pause("Um.", probability=0.9)  # the rule's own long wait is above the floor
    assert turn_end("transcript", later, floored) == 1.0 + WAITS.unfinished_pause_secs


def rows_with(paused: str, complete: str, median: int, p90: int) -> Rows:
    """Summary rows: today's default cuts off 3 paused utterances; Moonshine + the default
    strategy (floor 0) as given; the other floors cut off none."""
    rows: list[dict[str, object]] = [
        {
            "stt": "whisper",
            "strategy": "smart_turn",
            "cut_off_paused": "3/20",
            "cut_off_complete": "0/20",
            "median_ms": 900,
            "p90_ms": 3000,
        }
    ]
    for floor in FLOORS:
        row = {"cut_off_paused": "0/20", "cut_off_complete": "0/20", "median_ms": 2000}
        if floor == 0.0:
            row = {"cut_off_paused": paused, "cut_off_complete": complete, "median_ms": median}
        rows.append({"stt": "moonshine", "strategy": floor_label(floor), "p90_ms": p90} | row)
    return rows


def judged(rows: Rows) -> tuple[dict[str, dict], int]:
    found = against_today(rows)
    assert found is not None
    return found


def test_the_chosen_floor_is_the_smallest_that_does_no_worse_than_today() -> None:
    assert chosen_floor(judged(rows_with("3/20", "0/20", 500, 900))) == 0.0
    assert chosen_floor(judged(rows_with("4/20", "0/20", 500, 900))) == FLOORS[1]
    assert chosen_floor(judged(rows_with("3/20", "1/20", 500, 900))) == FLOORS[1]
    rows = rows_with("4/20", "0/20", 500, 900)
    rows[0]["cut_off_paused"] = "-1/20"  # no floor can do better than that
    assert chosen_floor(judged(rows)) is None


def test_the_goal_is_met_only_when_every_part_is() -> None:
    """Median ≤ 500 ms, p90 ≤ 1000 ms, paused cut-offs ≤ today's, no complete one."""
    assert all(goal_met(judged(rows_with("3/20", "0/20", 500, 1000))).values())
    assert goal_met(judged(rows_with("3/20", "0/20", 501, 900))) == {
        "median": False,
        "p90": True,
        "paused cut-offs": True,
        "no complete cut-off": True,
    }
    assert not goal_met(judged(rows_with("3/20", "0/20", 400, 1001)))["p90"]
    assert not goal_met(judged(rows_with("4/20", "0/20", 400, 900)))["paused cut-offs"]
    assert not goal_met(judged(rows_with("2/20", "1/20", 400, 900)))["no complete cut-off"]


def test_without_whisper_the_goal_and_floor_are_not_judged(tmp_path: Path) -> None:
    """``--stt moonshine``: no Whisper + Smart Turn to hold the cut-offs against, so the report
    says "n/a" for the goal and the floor (both sets) instead of failing after the run."""
    rows = [row for row in rows_with("3/20", "0/20", 500, 900) if row["stt"] != "whisper"]
    assert against_today(rows) is None
    utterance = Utterance("complete", "Yes.", "piper x1", False, silence(1))
    said = [pause("Yes.", 0.9)]
    outcomes = [
        outcome(utterance, "moonshine", v.strategy, said, v.waits, v.label) for v in variants(WAITS)
    ]
    rows = summary(outcomes, tts_secs=0.1)
    stt = Transcriber("moonshine", lambda pcm: "Yes.", [0.1])
    write_report(tmp_path, {TUNING: rows, HELD_OUT: rows}, outcomes, [stt], tts=0.1, took=1.0)
    report = json.loads((tmp_path / "summary.json").read_text())
    assert report["goal"] == report["goal_held_out"] == "n/a"
    text = (tmp_path / "README.md").read_text()
    assert text.count("Goal (Moonshine") == 2 and text.count(": n/a (") == 3, text


def test_the_report_judges_each_set_against_its_own_bar(tmp_path: Path) -> None:
    """summary.json gives the goal for the tuning set, the held-out set and the recorded
    people, each against the cut-offs of today's default in its own rows."""
    tuning, held_out = rows_with("3/20", "0/20", 500, 900), rows_with("4/12", "0/12", 500, 900)
    human = rows_with("3/20", "0/20", 700, 900)
    sets = {TUNING: tuning, HELD_OUT: held_out, HUMAN: human}
    write_report(tmp_path, sets, [], [], tts=0.1, took=1.0)
    report = json.loads((tmp_path / "summary.json").read_text())
    assert report["goal"]["paused cut-offs"] and not report["goal_held_out"]["paused cut-offs"]
    assert report["goal_human"]["paused cut-offs"] and not report["goal_human"]["median"]
    assert report["human"] == human


def test_a_part_that_did_not_run_says_why(tmp_path: Path) -> None:
    """Without the recordings (no index reachable), the report says so where their table
    would be, and judges nothing for them."""
    tuning = rows_with("3/20", "0/20", 500, 900)
    sets = {TUNING: tuning, HELD_OUT: tuning}
    write_report(tmp_path, sets, [], [], tts=0.1, took=1.0, skipped="not run: no index")
    report = json.loads((tmp_path / "summary.json").read_text())
    assert "goal_human" not in report and "human" not in report
    assert report["human_not_run"] == "not run: no index"
    text = (tmp_path / "README.md").read_text()
    assert "## Recorded people" in text and "not run: no index" in text


def test_an_early_answer_is_heard_at_the_turns_end_or_when_ready() -> None:
    """A complete sentence: the answer starts once the words are in (0.1 s after the VAD's
    stop), so the first audio comes at the turn's end if Piper is quicker than the wait,
    else when Piper is done; without early answers, after both."""
    utterance = Utterance("complete", "I'd like a table.", "piper x1", False, silence(1))
    done = [pause("I'd like a table.", probability=0.9)]
    waits = replace(WAITS, complete_pause_secs=0.5)
    early = outcome(utterance, "moonshine", "transcript", done, waits, speculate=True)
    late = outcome(utterance, "moonshine", "transcript", done, waits)
    wait = waits.complete_pause_secs
    assert early.early is not None and abs(early.early - 0.3) < 1e-9  # 0.2 VAD + 0.1 words
    assert early.first_audio(0.1) == early.latency == wait
    assert abs(early.first_audio(0.4) - 0.7) < 1e-9  # type: ignore[operator]
    assert late.early is None and late.first_audio(0.1) == wait + 0.1
    rows = summary([early], tts_secs=0.1)
    assert rows[0]["median_ms"] == round(wait * 1000)


def test_only_a_complete_sentence_is_answered_early() -> None:
    """Unsure or unfinished words, or words in after the turn's end: no early answer."""
    utterance = Utterance("complete", "Thanks", "piper x1", False, silence(1))
    for words in ("Thanks", "A table for"):
        result = outcome(
            utterance, "moonshine", "transcript", [pause(words, 0.9)], WAITS, speculate=True
        )
        assert result.early is None, words
    slow = Pause(1.0, 1.2, None, 0.9, 0.1, "I'd like a table.", 0.5)  # words in at 1.7 s
    result = outcome(utterance, "moonshine", "transcript", [slow], WAITS, speculate=True)
    assert result.early is None and result.latency is not None


def test_the_default_row_answers_early_beside_the_old_one() -> None:
    """The replay runs the old default (no early answer) beside the new one (floor 0)."""
    made = {v.label: v for v in variants(WAITS)}
    assert made[floor_label(0.0)].speculate and not made[NO_SPECULATION].speculate
    assert made[NO_SPECULATION].waits.min_pause_secs == 0.0
    assert made[floor_label(0.0)].hears_onsets and not made[NO_ONSET_HOLD].hears_onsets
    before = made[BEFORE_HOLD]
    assert not before.hears_onsets and before.speculate
    assert (before.waits.complete_pause_secs, before.waits.unsure_pause_secs) == (0.5, 0.8)


ONSET_WAITS = replace(WAITS, complete_pause_secs=0.3)


def going_on(resumed: float, onset: float) -> list[Pause]:
    """A complete sentence ending 1 s in (0.3 s wait), then more words ending 3 s in."""
    first = replace(pause("I'd like a table.", 0.9), resumed=resumed, onset=onset)
    return [first, Pause(3.0, 3.2, None, 0.9, 0.1, "By the window.", 0.1)]


def test_speech_heard_starting_before_the_wait_runs_out_is_not_cut_off() -> None:
    """The user goes on 0.25 s after the speech (the VAD confirms it 0.2 s later): with the
    onset hold, the server's rule, the turn goes on (to end after its next pause); without
    it the 0.3 s wait cuts it off; Smart Turn's own rule (Pipecat's) is not held."""
    utterance = Utterance("paused", "I'd like a table … by the window.", "piper x1", False, b"")
    pauses = going_on(resumed=1.45, onset=1.25)
    held = outcome(utterance, "moonshine", "transcript", pauses, ONSET_WAITS, hears_onsets=True)
    bare = outcome(utterance, "moonshine", "transcript", pauses, ONSET_WAITS)
    assert not held.cut_off and held.latency is not None and abs(held.latency - 0.3) < 1e-9
    assert bare.cut_off
    smart = outcome(utterance, "moonshine", "smart_turn", pauses, ONSET_WAITS, hears_onsets=True)
    assert smart.cut_off


def test_a_noise_heard_at_the_deadline_puts_the_end_off_until_it_fades() -> None:
    """A blip the VAD began to hear as speech at 1.28 s and dropped at 1.4 s: the turn ends
    at 1.4 s (a recheck's step later at most), not at the 1.3 s deadline."""
    utterance = Utterance("complete", "I'd like a table.", "piper x1", False, b"")
    pauses = [replace(pause("I'd like a table.", 0.9), blips=[(1.28, 1.4)])]
    held = outcome(utterance, "moonshine", "transcript", pauses, ONSET_WAITS, hears_onsets=True)
    assert held.latency is not None and 0.4 <= held.latency < 0.4 + ONSET_RECHECK_SECS + 1e-9
    bare = outcome(utterance, "moonshine", "transcript", pauses, ONSET_WAITS)
    assert bare.latency is not None and abs(bare.latency - 0.3) < 1e-9


class ScriptedVAD:
    """Plays Silero VAD's states, one per 20 ms frame, for ``vad_pauses``."""

    def __init__(self, states: str):
        codes = {"q": VADState.QUIET, "s": VADState.STARTING, "S": VADState.SPEAKING}
        self.states = [codes[c] for c in states]

    def vad(self, _params: object) -> ScriptedVAD:
        return self

    def set_sample_rate(self, _rate: int) -> None:
        """The frames are already at the rate."""

    def _run_analyzer(self, _frame: bytes) -> VADState:
        return self.states.pop(0)


def test_the_vad_pass_marks_where_speech_began_to_be_heard_and_the_noises() -> None:
    """Speech, a stop, a noise heard for two frames, then speech heard three frames before
    it was confirmed: the pause records the noise and the onset (frame ends, 20 ms each)."""
    script = "sSSq" + "qq" + "ssq" + "q" + "sssS" + "q"
    pauses = vad_pauses(ScriptedVAD(script), silence(len(script) * 0.02))  # type: ignore[arg-type]
    assert len(pauses) == 2
    first = pauses[0]
    assert abs(first.vad_stop - 0.08) < 1e-9
    assert [(round(a, 2), round(b, 2)) for a, b in first.blips] == [(0.14, 0.18)]
    assert first.onset is not None and abs(first.onset - 0.22) < 1e-9
    assert first.resumed is not None and abs(first.resumed - 0.28) < 1e-9
    assert pauses[1].onset is None and pauses[1].blips == []


def test_the_words_come_early_only_where_the_server_transcribes_early() -> None:
    """Transcribing early, the words are in 96 ms into the quiet plus the recognizer's
    time, not after the VAD's 0.2 s stop; the rows as before, and Pipecat's strategies,
    keep the stop."""
    first = Pause(1.0, 1.2, None, 0.9, 0.05, "I'd like a table.", 0.1)
    assert abs(transcript_in(first, early_stt=False) - 1.3) < 1e-9
    assert abs(transcript_in(first, early_stt=True) - (1.0 + EARLY_STT_AT_SECS + 0.1)) < 1e-9
    utterance = Utterance("complete", "I'd like a table.", "piper x1", False, b"")
    waits = replace(WAITS, complete_pause_secs=0.1)  # the words are what the turn waits for
    early = outcome(utterance, "moonshine", "transcript", [first], waits, early_stt=True)
    late = outcome(utterance, "moonshine", "transcript", [first], waits)
    assert early.latency is not None and abs(early.latency - 0.25) < 1e-9  # Smart Turn's 1.25
    assert late.latency is not None and abs(late.latency - 0.3) < 1e-9
    made = {v.label: v for v in variants(WAITS)}
    assert made[floor_label(0.0)].early_stt and not made[BEFORE_HOLD].early_stt
    assert not made["smart_turn"].early_stt
