"""ElevenLabs' streaming voice, speaking an LLM's answers as Piper does: in whole sentences of
plain words (services/spoken_answer.py). Imported only when ElevenLabs is the voice."""

from __future__ import annotations

from pipecat.services.elevenlabs.tts import ElevenLabsTTSService

from talkline.services.spoken_answer import AnswerSpeechTTSService


class ElevenLabsAnswerTTSService(AnswerSpeechTTSService, ElevenLabsTTSService):
    """Pipecat's ElevenLabs TTS with ``AnswerTextAggregator`` gathering its sentences."""
