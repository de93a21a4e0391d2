"""Speech through a running engine, as it happens: partial transcripts while audio arrives, and
speech chunks while the model is still writing codes. Shared by the server's streaming paths, the
benchmark and the demo.

Recognition re-reads the whole clip so far at each partial: the clip is seconds long and the
audio encoder is convolutional, so encoding it again costs milliseconds, and the model sees the
same prompt layout it was trained on (all of the audio, then the instruction).
"""

from __future__ import annotations

import queue
from typing import Iterator

import numpy as np

from hepta.infer.engine import Engine, generate_many
from hepta.infer.request import Event, Request
from hepta.infer.sampling import SamplingParams
from hepta.modality.audio_codec import AudioCodec
from hepta.modality.audio_features import SAMPLE_RATE
from hepta.modality.audio_stream import StreamingDecoder
from hepta.modality.chat import encode_chat
from hepta.modality.speech_tasks import say_turns, transcribe_turns

GREEDY = SamplingParams(temperature=0.0)
MAX_TRANSCRIPT_TOKENS = 48


def transcription_prompt(codec: AudioCodec, tokenizer, codes_K) -> list[int]:
    return encode_chat(transcribe_turns(codes_K), tokenizer, None, audio=codec.vocab)[0]


def speech_prompt(codec: AudioCodec, tokenizer, text: str) -> list[int]:
    """The user's request to say `text`, and the answer opened as an audio span."""
    return encode_chat(say_turns(text), tokenizer, None, audio=codec.vocab)[0] + [codec.vocab.start_id]


def transcribe(engine: Engine, tokenizer, codec: AudioCodec, wave: np.ndarray) -> str:
    request = Request(transcription_prompt(codec, tokenizer, codec.codes(wave)), MAX_TRANSCRIPT_TOKENS, GREEDY)
    return generate_many(engine, [request])[0][0].text.strip()


class StreamingTranscriber:
    """Feed audio as it arrives; a partial transcript every `partial_every` seconds of new audio."""

    def __init__(self, engine: Engine, tokenizer, codec: AudioCodec, partial_every: float = 0.5):
        self.engine, self.tokenizer, self.codec = engine, tokenizer, codec
        self.partial_every = round(partial_every * SAMPLE_RATE)
        self.pieces: list[np.ndarray] = []
        self.samples = self.at_last_partial = 0

    def feed(self, samples: np.ndarray) -> str | None:
        """Add 16 kHz samples; returns a partial transcript when one is due, else None."""
        self.pieces.append(np.asarray(samples, dtype=np.float32))
        self.samples += len(samples)
        if self.samples - self.at_last_partial < self.partial_every:
            return None
        self.at_last_partial = self.samples
        return transcribe(self.engine, self.tokenizer, self.codec, np.concatenate(self.pieces))

    def finish(self) -> str:
        """The final transcript of everything fed."""
        wave = np.concatenate(self.pieces) if self.pieces else np.zeros(0, np.float32)
        return transcribe(self.engine, self.tokenizer, self.codec, wave)


def stream_speech(engine: Engine, tokenizer, codec: AudioCodec, text: str, max_codes: int, speed: float = 1.0,
                  sampling: SamplingParams = GREEDY) -> Iterator[np.ndarray]:
    """16 kHz chunks of the model saying `text` in at most `max_codes` codes, each as soon as the
    decoder can make it."""
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    prompt = speech_prompt(codec, tokenizer, text)
    room = engine.max_len - len(prompt)  # a long sentence is cut at the context rather than refused
    request = Request(prompt, min(max_codes + 1, room), sampling, sink=events.put)
    decoder = StreamingDecoder(codec.tokenizer, speed=speed)
    engine.submit(request)
    try:
        while True:
            event = events.get()
            codes = [t - codec.vocab.code_start for t in event.token_ids if codec.vocab.is_code(t)]
            yield from decoder.push(codes)
            if event.finish_reason is not None:
                break
        yield decoder.finish()
    finally:
        request.cancel()  # a consumer that stops early frees the slot
