"""An LLM's answer is spoken in whole sentences of plain words (services/spoken_answer.py).

The pipeline pieces are Pipecat's and talkline's own: the guarded OpenAI-compatible LLM against
the OpenAI fake on loopback, a TTS built on ``AnswerSpeechTTSService`` that records the text it
is asked to synthesize, and Pipecat's assistant aggregator keeping the conversation's context.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

import pytest
from pipecat.frames.frames import (
    Frame,
    LLMContextAssistantTimestampFrame,
    LLMContextFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMAssistantAggregator
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.services.settings import TTSSettings

from talkline.client import RTVIClient
from talkline.services.elevenlabs_tts import ElevenLabsAnswerTTSService
from talkline.services.openai_llm import GuardedOpenAILLMService
from talkline.services.spoken_answer import (
    AnswerSpeechTTSService,
    AnswerTextAggregator,
    spoken_ending,
)
from tests.fakes import ElevenLabsFake, OpenAIFake
from tests.support import bot_text, running_server, speak_and_wait_for_answer, speak_until_turns
from tests.test_fakes import OUT_RATE, TTS_MODEL, VOICE, running

CUT_AFTER_A_SENTENCE = "The capital of France is Paris. It is famous for its"
ONE_UNFINISHED_SENTENCE = "The capital of France is Paris, which is"
CUT_MARKDOWN = "**Paris** is the _capital_ of France. It is famous for its"
MARKDOWN = (
    "# Paris\n**Paris** is the _capital_ of `France`.\n"
    "- It has the [Louvre](https://www.louvre.fr).\n- And ***many*** cafés."
)


class RecordingTTS(AnswerSpeechTTSService):
    """Records the text it is asked to speak and answers each with 10 ms of silence."""

    def __init__(self) -> None:
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model=None, voice="recorder", language=None),
        )
        self.spoken: list[str] = []

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        self.spoken.append(text.strip())
        yield TTSAudioRawFrame(bytes(2 * OUT_RATE // 100), OUT_RATE, 1, context_id=context_id)


@pytest.mark.parametrize(
    ("tail", "said_before", "expected"),
    [
        ("It is famous for its", True, ""),
        ("Dr. Who said hello. And then", True, "Dr. Who said hello."),
        ("The capital of France is Paris, which is", False, "The capital of France is Paris."),
        ("Paris is lovely; its", False, "Paris is lovely."),
        ("Paris is lovely,", False, "Paris is lovely."),
        # Punctuation inside a number is no clause end: cutting there would say a wrong fact.
        ("It costs 1,000 euros and", False, "It costs 1,000 euros and..."),
        ("The train leaves at 7:30 and then", False, "The train leaves at 7:30 and then..."),
        ("It costs 1,", False, "It costs 1,..."),
        ("The capital of France is", False, "The capital of France is..."),
        ("", False, ""),
    ],
)
def test_an_unfinished_tail_ends_on_a_whole_sentence(
    tail: str, said_before: bool, expected: str
) -> None:
    """A cut answer's tail: its complete sentences only; a lone fragment is rounded off."""
    assert spoken_ending(tail, said_before=said_before) == expected


async def flushed(aggregator: AnswerTextAggregator, text: str) -> list[str]:
    """The sentences ``aggregator`` hands out for ``text``, then what its flush gives."""
    out = [sentence.text async for sentence in aggregator.aggregate(text)]
    rest = await aggregator.flush()
    return out + ([rest.text] if rest else [])


async def test_a_cut_is_forgotten_after_its_answer_or_an_interruption() -> None:
    """Only the answer that was cut loses its tail: the next one, or one after a barge-in,
    is flushed whole."""
    aggregator = AnswerTextAggregator()
    aggregator.cut()
    assert await flushed(aggregator, "Paris is lovely. And its") == ["Paris is lovely."]
    assert await flushed(aggregator, "Rome is old. And its") == ["Rome is old.", "And its"]
    aggregator.cut()
    await aggregator.handle_interruption()
    assert await flushed(aggregator, "Oslo is cold, and") == ["Oslo is cold, and"]


async def test_a_reset_forgets_a_cut() -> None:
    """A cut answer then a reset (Pipecat resets the aggregator when it starts anew): the next
    answer is flushed whole."""
    aggregator = AnswerTextAggregator()
    aggregator.cut()
    await aggregator.reset()
    assert await flushed(aggregator, "Oslo is cold, and") == ["Oslo is cold, and"]


async def test_a_cut_tail_is_read_in_the_aggregators_language() -> None:
    """German: "bzw." is an abbreviation, not a sentence end, so the cut tail is one
    unfinished sentence that trails off (in English it would stop at "bzw.")."""
    aggregator = AnswerTextAggregator(language="de")
    aggregator.cut()
    spoken = await flushed(aggregator, "Wir treffen uns bzw. später und")
    assert spoken == ["Wir treffen uns bzw. später und..."]


@pytest.mark.parametrize(
    ("answer", "sentences"),
    [
        # Bold and italics spanning two sentences: each sentence gets one unpaired mark.
        (
            "**Paris is lovely. It is old.** Yes.",
            ["Paris is lovely.", "It is old.", "Yes."],
        ),
        ("_Paris is lovely. It is old._ Yes.", ["Paris is lovely.", "It is old.", "Yes."]),
        # Inline code spanning two sentences.
        ("`x = 1. And y = 2.` Done.", ["x = 1.", "And y = 2.", "Done."]),
        ("Run `pip install x`. Then `x --help`.", ["Run pip install x.", "Then x --help."]),
        # Marks that are content stay: inside a word, between digits, standing alone.
        (
            "Use my_var and 2*3 here. Press * then #.",
            ["Use my_var and 2*3 here.", "Press * then #."],
        ),
    ],
)
async def test_markdown_spanning_sentences_leaves_no_stray_marks(
    answer: str, sentences: list[str]
) -> None:
    """Emphasis or code opened in one sentence and closed in another is not read aloud."""
    assert await flushed(AnswerTextAggregator(), answer) == sentences


async def speak_answer(
    llm: FrameProcessor, question: str, within: float = 5.0
) -> tuple[RecordingTTS, LLMContext]:
    """``llm``'s answer to ``question``, through the recording TTS and the assistant
    aggregator, once it is in the context."""
    context = LLMContext(messages=[{"role": "user", "content": question}])
    tts = RecordingTTS()
    pipeline = Pipeline([llm, tts, LLMAssistantAggregator(context)])
    async with running(pipeline) as harness:
        await harness.send(LLMContextFrame(context))
        # The assistant aggregator stamps the answer once it is in the context.
        done = LLMContextAssistantTimestampFrame
        await harness.down.wait_for(lambda: bool(harness.down.of(done)), within)
    return tts, context


async def answer(reply: str, finish_reason: str) -> tuple[RecordingTTS, LLMContext]:
    """``reply`` streamed word by word by the fake, ending with ``finish_reason``."""
    async with OpenAIFake(reply=reply, finish_reason=finish_reason) as fake:
        llm = GuardedOpenAILLMService(
            api_key="test-key",
            base_url=fake.base_url,
            settings=GuardedOpenAILLMService.Settings(model="gpt-4.1"),
            first_response_secs=5.0,
        )
        return await speak_answer(llm, "Tell me about Paris.")


def assistant_said(context: LLMContext) -> str:
    said = [m for m in context.get_messages() if m.get("role") == "assistant"]  # type: ignore[union-attr]
    return " ".join(str(m.get("content", "")) for m in said).strip()  # type: ignore[union-attr]


async def test_an_answer_cut_by_max_tokens_is_not_spoken_past_its_last_sentence() -> None:
    """finish_reason "length" after a whole sentence: the unfinished rest is neither spoken,
    nor shown, nor kept in the context."""
    tts, context = await answer(CUT_AFTER_A_SENTENCE, "length")
    assert tts.spoken == ["The capital of France is Paris."]
    assert assistant_said(context) == "The capital of France is Paris."


async def test_an_answer_that_ends_normally_is_spoken_to_its_last_word() -> None:
    """The same words with finish_reason "stop": the last fragment is spoken as written."""
    tts, context = await answer(CUT_AFTER_A_SENTENCE, "stop")
    assert tts.spoken == ["The capital of France is Paris.", "It is famous for its"]
    assert assistant_said(context) == CUT_AFTER_A_SENTENCE


async def test_a_cut_answer_with_no_whole_sentence_ends_at_its_last_comma() -> None:
    """One unfinished sentence: it is spoken up to its last comma, with a full stop."""
    tts, context = await answer(ONE_UNFINISHED_SENTENCE, "length")
    assert tts.spoken == ["The capital of France is Paris."]
    assert assistant_said(context) == "The capital of France is Paris."


async def test_markdown_reaches_the_voice_and_the_context_as_plain_words() -> None:
    """Headings, bold, italics, code, bullets and links are spoken (and kept) as their words."""
    tts, context = await answer(MARKDOWN, "stop")
    spoken = " ".join(tts.spoken)
    for mark in ("#", "*", "_", "`", "[", "](", "http", "- "):
        assert mark not in spoken, (mark, spoken)
    plain_words = "Paris Paris is the capital of France. It has the Louvre. And many cafés."
    assert spoken.split() == plain_words.split(" ")
    assert assistant_said(context).split() == spoken.split()


async def test_elevenlabs_is_sent_the_plain_whole_sentences_only() -> None:
    """The same answer spoken by ElevenLabs (the fake on loopback): it is sent "Paris is the
    capital of France." and nothing of the markdown or the unfinished rest."""
    settings = ElevenLabsAnswerTTSService.Settings(voice=VOICE, model=TTS_MODEL)
    async with (
        OpenAIFake(reply=CUT_MARKDOWN, finish_reason="length") as llm_fake,
        ElevenLabsFake(ms_per_char=5) as voice_fake,
    ):
        llm = GuardedOpenAILLMService(
            api_key="test-key",
            base_url=llm_fake.base_url,
            settings=GuardedOpenAILLMService.Settings(model="gpt-4.1"),
            first_response_secs=5.0,
        )
        tts = ElevenLabsAnswerTTSService(api_key="test-key", url=voice_fake.url, settings=settings)
        async with running(Pipeline([llm, tts])) as harness:
            await harness.send(
                LLMContextFrame(LLMContext(messages=[{"role": "user", "content": "Paris?"}]))
            )
            await harness.down.wait_for(lambda: bool(harness.down.of(TTSStoppedFrame)))
    sent = "".join(voice_fake.connections[0].texts)
    assert sent.split() == ["Paris", "is", "the", "capital", "of", "France."]


@pytest.fixture
async def cut_markdown_llm() -> AsyncIterator[OpenAIFake]:
    """An LLM that answers in markdown and runs out of tokens mid-sentence."""
    async with OpenAIFake(api_key=None, reply=CUT_MARKDOWN, finish_reason="length") as fake:
        yield fake


async def test_a_spoken_turn_hears_and_remembers_only_the_plain_whole_sentences(
    cut_markdown_llm: OpenAIFake, weather_pcm: bytes, dragon_pcm: bytes
) -> None:
    """Through /ws with Piper: the client is told, and hears, "Paris is the capital of
    France." only; the next turn's request carries that as the assistant's answer."""
    fake = cut_markdown_llm
    with running_server(llm_base_url=fake.base_url, llm_timeout=5.0) as server:
        async with RTVIClient(server.ws_url) as client:
            await client.client_ready()
            await speak_and_wait_for_answer(client, weather_pcm)
            said = bot_text(client)
            await speak_until_turns(client, dragon_pcm, answered=2)
    assert said.strip() == "Paris is the capital of France."
    shown = " ".join(e.data.get("text", "") for e in client.of_type("bot-output"))
    assert "Paris is the capital of France." in shown
    assert "famous" not in shown and "*" not in shown and "_" not in shown
    remembered = [m for m in fake.completions[1].messages if m["role"] == "assistant"]
    assert [m["content"] for m in remembered] == ["Paris is the capital of France."]
