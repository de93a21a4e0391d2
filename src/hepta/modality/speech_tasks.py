"""The speech conversations: one builder each, shared by training, evaluation, the server and the demo.

Recognition puts the audio first, then the instruction, like the image tasks; synthesis asks in
text and the answer is one audio span.
"""

from __future__ import annotations

from hepta.modality.chat import AudioCodes, Turn

TRANSCRIBE_PROMPT = "Transcribe this audio."
SAY_PROMPT = "Say: {text}"


def transcribe_turns(audio_codes, transcript: str | None = None) -> list[Turn]:
    turns = [Turn("user", (AudioCodes(audio_codes), TRANSCRIBE_PROMPT))]
    return turns + ([Turn("assistant", (transcript,))] if transcript is not None else [])


def say_turns(text: str, audio_codes=None) -> list[Turn]:
    turns = [Turn("user", (SAY_PROMPT.format(text=text),))]
    return turns + ([Turn("assistant", (AudioCodes(audio_codes),))] if audio_codes is not None else [])
