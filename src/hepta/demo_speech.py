"""Speech in `hepta demo`: the model says a held-out sentence into a WAV file and transcribes a
held-out voice, both through the `openai` client's audio endpoints."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from hepta.modality import speech_data, speech_domain
from hepta.modality.audio_io import decode_audio, encode_wav

SPEECH_FILE = "speech.wav"


def speech_demo(console: Console, client, model_name: str, out: Path) -> None:
    console.rule("speech through the same API (held-out sentences and voices: never seen in training)")
    sentence = speech_domain.sentences("held_out", 1, seed=0)[0]
    path = out / SPEECH_FILE
    with client.audio.speech.with_streaming_response.create(model=model_name, voice="alloy", input=sentence,
                                                            response_format="wav") as response:
        response.stream_to_file(path)
    seconds = len(decode_audio(path.read_bytes())) / 16000
    console.print(f"[bold]client.audio.speech[/](input={sentence!r}): {seconds:.1f} s of speech in {path}"
                  f"{_judged(path)}")

    utterance = speech_data.varied_utterances("held_out", 1, seed=0)[0]
    heard = client.audio.transcriptions.create(model=model_name, file=("held_out.wav", encode_wav(utterance.wave),
                                                                       "audio/wav"))
    console.print(f"[bold]client.audio.transcriptions[/]: the held-out voice {utterance.voice!r} says "
                  f"{utterance.text!r} -> heard {heard.text!r}")


def _judged(path: Path) -> str:
    """What the independent recogniser hears in the file, where it is installed (`hepta[eval]`)."""
    try:
        from hepta.eval.recogniser import domain_recogniser
    except ImportError:
        return ""
    try:
        heard = domain_recogniser().transcribe(decode_audio(path.read_bytes()))
    except ImportError:
        return ""
    return f"; pocketsphinx hears {heard!r}"
