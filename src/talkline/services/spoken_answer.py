"""What a TTS says of a language model's answer: whole sentences, in plain words.

Two things a model writes are not meant for the ear:

- An answer stopped by ``max_tokens`` ends mid-sentence ("Paris, which is"). Pipecat's TTS
  speaks an answer sentence by sentence: its text aggregator holds the text after the last
  sentence end and hands it over (``flush``) only when the answer ends. When the LLM says the
  answer was cut (an ``AnswerCutFrame`` before the answer's end), that unfinished tail is
  dropped instead of spoken; if nothing at all was said yet, the fragment is ended at its last
  comma, or trails off with "...".
- Markdown (``**bold**``, ``# headings``, ``- bullets``, backticks, ``[links](url)``): each
  sentence goes through Pipecat's ``strip_markdown`` as it leaves the aggregator, so the
  voice, the ``bot-output`` / ``bot-tts-text`` the client shows and the conversation's
  context all hold the same plain words (a small model that sees its own markdown in the
  context keeps writing it). Emphasis or inline code that spans sentences is split by the
  sentence ends, so a sentence can hold one unpaired ``**`` or backtick; those stray marks
  are removed too (``stray_marks_removed``).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pipecat.frames.frames import ControlFrame, Frame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.tts_service import TTSService
from pipecat.utils.string import match_endofsentence
from pipecat.utils.text.base_text_aggregator import Aggregation, TextType
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator
from pipecat.utils.text.transforms import strip_markdown

TRAILING_OFF = "..."
# Where a clause ends inside a sentence: the place to stop a fragment cut mid-clause. A
# , ; or : followed by a space (never one inside a number: "1,000", "7:30"), or ending the
# fragment unless a digit is before it (the number may have gone on); or a spaced dash.
CLAUSE_END = re.compile(r"[,;:](?=\s)|(?<!\d)[,;:]$|\s[-\u2013\u2014]\s")
# An emphasis mark (run of * or _) left unpaired when its span was split into sentences: one
# at a word's edge ("**Paris", "old.**") or at the text's start or end ("** Yes."). A mark
# with no space on either side is content ("snake_case", "2*3"), as is one standing alone
# between spaces ("Press * then #"); Pipecat's strip_markdown keeps those.
STRAY_EMPHASIS = re.compile(r"(?<!\S)[*_]+(?!\s)|(?<!\s)[*_]+(?!\S)")
# Backticks strip_markdown left are unpaired: never spoken, never content in a spoken answer.
STRAY_BACKTICKS = re.compile(r"`+")

# --- Pipecat internals this module relies on -----------------------------------------------
# Private names of Pipecat's TTSService that AnswerSpeechTTSService reads or writes, with why;
# tests/test_pipecat_contract.py checks each against the installed Pipecat.
# (owner, name, kind, why); kind is "override", "calls" or "reads" (reads or writes).
PIPECAT_PRIVATE: tuple[tuple[type, str, str, str], ...] = (
    (
        TTSService,
        "_text_aggregator",
        "reads",
        "replaced by AnswerTextAggregator: its flush() is where an answer's tail is spoken",
    ),
)


@dataclass
class AnswerCutFrame(ControlFrame):
    """The LLM stopped at its token limit: the answer's last sentence is unfinished.

    Sent after the answer's last text and before its ``LLMFullResponseEndFrame``.
    """


def complete_sentences(text: str, language: str | None = None) -> str:
    """The leading complete sentences of ``text`` ("" when the first is unfinished), as
    Pipecat finds sentence ends in ``language`` (None: its default, English)."""
    end = 0
    while found := match_endofsentence(text[end:], language=language):
        end += found
    return text[:end].strip()


def rounded_off(fragment: str) -> str:
    """An unfinished sentence made sayable: cut at its last clause end and given a full
    stop, or, with no clause end, left to trail off."""
    clauses = list(CLAUSE_END.finditer(fragment))
    head = fragment[: clauses[-1].start()].strip() if clauses else ""
    if head:
        return f"{head}."
    return f"{fragment.strip()}{TRAILING_OFF}" if fragment.strip() else ""


def spoken_ending(tail: str, *, said_before: bool, language: str | None = None) -> str:
    """What to say of the unspoken ``tail`` of an answer cut off mid-sentence.

    Its complete sentences, if any; else nothing when earlier sentences were spoken; else
    (the whole answer is one unfinished sentence) the fragment rounded off.
    """
    whole = complete_sentences(tail, language)
    if whole or said_before:
        return whole
    return rounded_off(tail)


def stray_marks_removed(text: str) -> str:
    """``text`` without the unpaired emphasis marks and backticks markdown stripping left."""
    text = STRAY_BACKTICKS.sub("", STRAY_EMPHASIS.sub("", text))
    return text.strip(" ")


async def plain(aggregation: Aggregation) -> Aggregation:
    """The aggregation with its markdown removed (Pipecat's ``strip_markdown``), and the
    marks of emphasis or code that began or ended in another sentence."""
    text = await strip_markdown(aggregation.text, aggregation.type)
    return Aggregation(text=stray_marks_removed(text), type=aggregation.type)


class AnswerTextAggregator(SimpleTextAggregator):
    """Pipecat's sentence aggregator, giving out plain words, that drops an unfinished last
    sentence once told the answer was cut (``cut()``)."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._answer_cut = False
        self._said = False  # a sentence of this answer has been handed out

    def cut(self) -> None:
        """The answer being aggregated stopped mid-sentence: don't flush its tail whole."""
        self._answer_cut = True

    async def aggregate(self, text: str) -> AsyncIterator[Aggregation]:
        async for sentence in super().aggregate(text):
            sentence = await plain(sentence)
            self._said = self._said or bool(sentence.text.strip())
            yield sentence

    async def flush(self) -> Aggregation | None:
        """The answer's last words: all of them, or what ``spoken_ending`` keeps of a cut one."""
        cut, said = self._answer_cut, self._said
        self._forget_answer()
        rest = await super().flush()
        if rest is None:
            return None
        rest = await plain(rest)
        if cut:
            rest.text = spoken_ending(rest.text, said_before=said, language=self.language)
        return rest if rest.text else None

    async def handle_interruption(self) -> None:
        await super().handle_interruption()
        self._forget_answer()

    async def reset(self) -> None:
        await super().reset()
        self._forget_answer()

    def _forget_answer(self) -> None:
        self._answer_cut = self._said = False


class AnswerSpeechTTSService(TTSService):
    """A TTS service that speaks answers through ``AnswerTextAggregator`` (when it gathers
    sentences; speech token by token is left as Pipecat does it)."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        pipecats = self._text_aggregator
        if pipecats.aggregation_type == TextType.SENTENCE:
            self._text_aggregator = AnswerTextAggregator(
                aggregation_type=TextType.SENTENCE, language=pipecats.language
            )

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        aggregator = self._text_aggregator
        if isinstance(frame, AnswerCutFrame) and isinstance(aggregator, AnswerTextAggregator):
            aggregator.cut()
        await super().process_frame(frame, direction)
