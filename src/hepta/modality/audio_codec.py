"""Speech <-> span ids for one model: its audio tokenizer and where its codes sit in the id space."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from hepta.modality.audio_span import AudioVocab
from hepta.modality.audio_tokenizer import AudioTokenizer
from hepta.modality.chat import audio_vocab
from hepta.tokenizer import Tokenizer

# Waves go through the encoder in batches of similar length, padded with silence to the longest.
ENCODE_BATCH = 64


@dataclass
class AudioCodec:
    tokenizer: AudioTokenizer
    vocab: AudioVocab

    @classmethod
    def of(cls, audio_tokenizer: AudioTokenizer, text_tokenizer: Tokenizer) -> "AudioCodec":
        return cls(audio_tokenizer, audio_vocab(text_tokenizer))

    @property
    def codes_per_second(self) -> float:
        return self.tokenizer.config.codes_per_second

    def codes(self, wave: np.ndarray) -> torch.Tensor:
        """One 16 kHz clip in [-1, 1] -> its codes [K]."""
        return self.tokenizer.encode(torch.as_tensor(wave, dtype=torch.float32)[None])[0]

    def codes_of_many(self, waves: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Many clips -> their codes, each cut to its own length (the padding's codes dropped)."""
        order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
        out: list[torch.Tensor | None] = [None] * len(waves)
        for begin in range(0, len(order), ENCODE_BATCH):
            chunk = order[begin:begin + ENCODE_BATCH]
            longest = len(waves[chunk[-1]])
            batch = np.zeros((len(chunk), longest), dtype=np.float32)
            for row, i in enumerate(chunk):
                batch[row, :len(waves[i])] = waves[i]
            codes_NK = self.tokenizer.encode(torch.from_numpy(batch))
            for row, i in enumerate(chunk):
                out[i] = codes_NK[row, :self.num_codes_for(len(waves[i]))].clone()
        return out  # type: ignore[return-value]

    def num_codes_for(self, num_samples: int) -> int:
        return self.tokenizer.config.num_codes_for(num_samples)

    def wave(self, codes_K: torch.Tensor | Sequence[int], speed: float = 1.0) -> np.ndarray:
        """Codes [K] -> 16 kHz waveform in [-1, 1]."""
        codes = torch.as_tensor(codes_K, dtype=torch.long).flatten()
        if codes.numel() == 0:
            return np.zeros(0, dtype=np.float32)
        return self.tokenizer.decode(codes[None], speed=speed)[0].numpy()

    def waves_in(self, ids: Sequence[int]) -> list[np.ndarray]:
        """Every complete audio span in `ids`, decoded."""
        return [self.wave(codes) for codes in self.vocab.find_spans(ids)]

    def span_ids(self, wave: np.ndarray) -> list[int]:
        return self.vocab.span_ids(self.codes(wave))
