"""Speech out while the model is still writing it: audio codes arrive one by one, waveform chunks leave.

Every `chunk_codes` codes (0.32 s at 25 codes a second) the decoder turns a window of codes into a
spectrogram and Griffin-Lim into samples. The window reaches `context_codes` back and `lookahead_codes`
ahead of the chunk, because the decoder's convolutions see neighbouring codes and Griffin-Lim's
phase settles only away from a window's edges; only the chunk's own samples are sent. Two chunks
meet in a `CROSSFADE` of samples computed by both, faded linearly, so the seam does not click.
The first chunk waits for `chunk_codes + lookahead_codes` codes: that, plus the prompt, is the
time to first audio.

Dims: K codes, B bins, F frames, S samples.
"""

from __future__ import annotations

import numpy as np
import torch

from hepta.modality import audio_features
from hepta.modality.audio_tokenizer import AudioTokenizer

CROSSFADE = 160  # samples (10 ms at speed 1)


class StreamingDecoder:
    def __init__(self, tokenizer: AudioTokenizer, chunk_codes: int = 8, context_codes: int = 4,
                 lookahead_codes: int = 4, speed: float = 1.0, iterations: int = 32):
        self.tokenizer = tokenizer
        self.chunk_codes, self.context_codes, self.lookahead_codes = chunk_codes, context_codes, lookahead_codes
        self.iterations = iterations
        self.hop = max(16, round(audio_features.HOP / speed))
        self.samples_per_code = self.hop * tokenizer.config.downsample
        self.codes: list[int] = []
        self.sent = 0  # codes whose samples have left
        self.tail: np.ndarray | None = None  # the crossfade samples the last chunk computed past its end

    def push(self, codes: list[int]) -> list[np.ndarray]:
        """Add codes (ids within the audio block); the chunks that are now ready, in order."""
        self.codes += [int(c) for c in codes]
        chunks = []
        while len(self.codes) - self.sent >= self.chunk_codes + self.lookahead_codes:
            chunks.append(self._chunk(self.sent + self.chunk_codes, final=False))
        return chunks

    def finish(self) -> np.ndarray:
        """The samples of every code not yet sent (the stream has ended)."""
        if self.sent >= len(self.codes):
            out, self.tail = (self.tail if self.tail is not None else np.zeros(0, np.float32)), None
            return out
        return self._chunk(len(self.codes), final=True)

    @torch.no_grad()
    def _chunk(self, end: int, final: bool) -> np.ndarray:
        first = max(0, self.sent - self.context_codes)
        last = len(self.codes) if final else min(len(self.codes), end + self.lookahead_codes)
        codes_1K = torch.tensor(self.codes[first:last], dtype=torch.long)[None]
        wave = audio_features.griffin_lim(self.tokenizer.decode_spectrogram(codes_1K), iterations=self.iterations,
                                          hop=self.hop)[0].numpy()
        begin = (self.sent - first) * self.samples_per_code
        stop = (end - first) * self.samples_per_code
        crossfade = 0 if final else min(CROSSFADE, len(wave) - stop)
        out = wave[begin:stop + crossfade].astype(np.float32)
        if self.tail is not None:
            n = min(len(self.tail), len(out))
            fade = np.linspace(0.0, 1.0, n, dtype=np.float32)
            out[:n] = self.tail[:n] * (1 - fade) + out[:n] * fade
        self.tail = out[len(out) - crossfade:].copy() if crossfade else None
        self.sent = end
        return out[:len(out) - crossfade] if crossfade else out
