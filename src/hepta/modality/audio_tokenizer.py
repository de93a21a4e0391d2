"""The audio tokenizer: 16 kHz speech -> discrete codes at a fixed rate -> speech.

The encoder reads log-mel frames (100 a second) through 1-D convolutions that halve the frame
rate `log2(downsample)` times, and FSQ rounds each remaining frame to one code (25 a second at
the default downsample of 4). The decoder mirrors it back to 100 frames a second of
log-magnitude linear spectrogram, and Griffin-Lim (audio_features.py) makes the waveform.

Why Griffin-Lim rather than a trained vocoder: it has nothing to train, runs at ~30x real time
on one core, and for the robotic-but-clear speech of the domain the judge's word error rate is
what matters; a small neural vocoder would sound better and is the next step. Saved as
`audio_tokenizer/` inside a model folder: `config.json` and `model.safetensors`.

Dims: N clips, S samples, M mel bands, B linear bins, F frames, H hidden, C latent channels, K codes.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from hepta.modality import audio_features
from hepta.modality.audio_tokenizer_config import AudioTokenizerConfig
from hepta.modality.fsq import FSQ
from hepta.modality.tokenizer_folder import load_tokenizer, save_tokenizer

AUDIO_TOKENIZER_DIR = "audio_tokenizer"
# log-magnitudes are centred and scaled to about unit range before the encoder
LOG_MEL_OFFSET, LOG_MEL_SCALE = -4.0, 4.0


class _Residual(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.body = nn.Sequential(nn.GELU(), nn.Conv1d(hidden, hidden, 5, padding=2), nn.GELU(),
                                  nn.Conv1d(hidden, hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class AudioTokenizer(nn.Module):
    def __init__(self, config: AudioTokenizerConfig):
        super().__init__()
        self.config = config
        hidden, num_halvings = config.hidden, int(math.log2(config.downsample))
        encoder: list[nn.Module] = [nn.Conv1d(audio_features.NUM_MELS, hidden, 5, padding=2), _Residual(hidden)]
        for _ in range(num_halvings):
            encoder += [nn.Conv1d(hidden, hidden, 4, stride=2, padding=1), _Residual(hidden)]
        encoder += [_Residual(hidden), nn.GELU(), nn.Conv1d(hidden, len(config.levels), 1)]
        self.encoder = nn.Sequential(*encoder)
        self.quantizer = FSQ(config.levels)
        decoder: list[nn.Module] = [nn.Conv1d(len(config.levels), hidden, 3, padding=1), _Residual(hidden),
                                    _Residual(hidden)]
        for _ in range(num_halvings):
            decoder += [nn.ConvTranspose1d(hidden, hidden, 4, stride=2, padding=1), _Residual(hidden)]
        decoder += [nn.GELU(), nn.Conv1d(hidden, audio_features.NUM_BINS, 5, padding=2)]
        self.decoder = nn.Sequential(*decoder)

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    # --- spectrogram level (training) ---------------------------------------------------------

    def frames(self, wave_NS: torch.Tensor) -> torch.Tensor:
        """Log-mel input [N, M, F] with F a multiple of `downsample` (the clip's tail is padded with silence)."""
        ds = self.config.downsample
        samples = wave_NS.shape[-1]
        frames = samples // audio_features.HOP + 1
        padded = math.ceil(frames / ds) * ds
        wave_NS = nn.functional.pad(wave_NS, (0, (padded - 1) * audio_features.HOP - samples))
        return (audio_features.log_mel(wave_NS) - LOG_MEL_OFFSET) / LOG_MEL_SCALE

    def quantize(self, raw_NCK: torch.Tensor) -> torch.Tensor:
        """The encoder's raw output -> quantized latents [N, C, K] (straight-through in training)."""
        return self.quantizer(raw_NCK.unsqueeze(-1)).squeeze(-1)

    def latents(self, log_mel_NMF: torch.Tensor) -> torch.Tensor:
        return self.quantize(self.encoder(log_mel_NMF))

    def spectrogram(self, latents_NCK: torch.Tensor) -> torch.Tensor:
        """Log-magnitude linear spectrogram [N, B, K * downsample]."""
        return self.decoder(latents_NCK) * LOG_MEL_SCALE + LOG_MEL_OFFSET

    def forward(self, log_mel_NMF: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The reconstruction [N, B, F] and the encoder's raw output [N, C, K] (training bounds its scale)."""
        raw_NCK = self.encoder(log_mel_NMF)
        return self.spectrogram(self.quantize(raw_NCK)), raw_NCK

    # --- waveform level (use) ---------------------------------------------------------------

    @torch.no_grad()
    def encode(self, wave_NS: torch.Tensor) -> torch.Tensor:
        """16 kHz waveforms [N, S] in [-1, 1] -> codes [N, K], K = ceil((S / 160 + 1) / downsample)."""
        return self.quantizer.to_codes(self.latents(self.frames(wave_NS.float())).unsqueeze(-1)).squeeze(-1)

    @torch.no_grad()
    def decode_spectrogram(self, codes_NK: torch.Tensor) -> torch.Tensor:
        return self.spectrogram(self.quantizer.from_codes(codes_NK.unsqueeze(-1)).squeeze(-1))

    @torch.no_grad()
    def decode(self, codes_NK: torch.Tensor, speed: float = 1.0, iterations: int = 32) -> torch.Tensor:
        """Codes [N, K] -> 16 kHz waveforms [N, S]; `speed` > 1 says it faster at the same pitch."""
        hop = max(16, round(audio_features.HOP / speed))
        return audio_features.griffin_lim(self.decode_spectrogram(codes_NK), iterations=iterations, hop=hop)

    # --- the folder ---------------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        save_tokenizer(self, self.config, folder)

    @classmethod
    def load(cls, folder: str | Path) -> "AudioTokenizer":
        return load_tokenizer(cls, AudioTokenizerConfig, folder, "audio")


def load_audio_tokenizer(model_folder: str | Path) -> AudioTokenizer | None:
    """The audio tokenizer inside a model folder, or None for a model without speech."""
    folder = Path(model_folder) / AUDIO_TOKENIZER_DIR
    return AudioTokenizer.load(folder) if folder.is_dir() else None
