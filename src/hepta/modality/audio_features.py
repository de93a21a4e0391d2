"""Spectrograms of 16 kHz speech and Griffin-Lim back to a waveform, on torch's STFT.

The audio tokenizer reads log-mel frames (what speech models read: the ear's frequency scale,
64 bands) and its decoder writes the log-magnitude linear spectrogram, which Griffin-Lim turns
into a waveform. torchaudio and librosa do both, but torchaudio only ships for other torch
builds than the one hepta pins, and librosa would bring numba for two small functions; the mel
filterbank is the standard HTK-scale triangle formula and Griffin-Lim is ten lines on
`torch.stft`/`torch.istft`.

Dims: N clips, S samples, F frames (one per `HOP` samples), B linear bins, M mel bands.
"""

from __future__ import annotations

import functools
import math

import torch

SAMPLE_RATE = 16_000
N_FFT = 512  # 32 ms windows
HOP = 160  # 10 ms: 100 frames a second
NUM_BINS = N_FFT // 2 + 1
NUM_MELS = 64
LOG_FLOOR = 1e-5  # magnitudes below this are silence


@functools.lru_cache(maxsize=4)
def mel_filterbank(num_mels: int = NUM_MELS, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT) -> torch.Tensor:
    """[M, B] triangular filters evenly spaced on the mel scale from 0 Hz to Nyquist (HTK formula)."""
    def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
        return 2595.0 * torch.log10(1.0 + hz / 700.0)

    def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
        return 700.0 * (10 ** (mel / 2595.0) - 1.0)

    bins_hz = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges_hz = mel_to_hz(torch.linspace(0, float(hz_to_mel(torch.tensor(sample_rate / 2.0))), num_mels + 2))
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bins_hz - lower) / (centre - lower)
    falling = (upper - bins_hz) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


def _window(device: torch.device | None = None) -> torch.Tensor:
    return torch.hann_window(N_FFT, device=device)


def stft(wave_NS: torch.Tensor) -> torch.Tensor:
    """Complex spectrogram [N, B, F], F = S // HOP + 1."""
    return torch.stft(wave_NS, N_FFT, HOP, window=_window(wave_NS.device), center=True, return_complex=True)


def log_magnitude(wave_NS: torch.Tensor) -> torch.Tensor:
    """[N, B, F] natural log of the linear magnitude."""
    return torch.log(stft(wave_NS).abs().clamp_min(LOG_FLOOR))


def log_mel(wave_NS: torch.Tensor) -> torch.Tensor:
    """[N, M, F] natural log of the mel-band magnitudes."""
    magnitude_NBF = stft(wave_NS).abs()
    return torch.log((mel_filterbank().to(wave_NS.device) @ magnitude_NBF).clamp_min(LOG_FLOOR))


def griffin_lim(log_magnitude_NBF: torch.Tensor, iterations: int = 32, momentum: float = 0.99,
                hop: int = HOP) -> torch.Tensor:
    """Waveforms [N, S] whose spectrogram magnitude is close to the given one.

    The fast variant (Perraudin et al., 2013): each pass keeps the target magnitude, takes the
    phase of the spectrogram of the current waveform, and extrapolates the phase by `momentum`.
    Synthesising with another `hop` than the analysis one stretches time without changing pitch
    (the `speed` of the speech API).
    """
    magnitude = log_magnitude_NBF.exp()
    length = (magnitude.shape[-1] - 1) * hop
    window = _window(magnitude.device)
    generator = torch.Generator(device=magnitude.device).manual_seed(0)  # the same audio for the same codes
    angles = torch.polar(torch.ones_like(magnitude),
                         2 * math.pi * torch.rand(magnitude.shape, generator=generator, device=magnitude.device))
    previous = torch.zeros_like(angles)
    for _ in range(iterations):
        wave = torch.istft(magnitude * angles, N_FFT, hop, window=window, length=length)
        # zero padding at the edges: a clip shorter than half a window (a few codes said fast) has
        # nothing to reflect
        rebuilt = torch.stft(wave, N_FFT, hop, window=window, center=True, pad_mode="constant", return_complex=True)
        accelerated = rebuilt - (momentum / (1 + momentum)) * previous
        angles = accelerated / accelerated.abs().clamp_min(1e-8)
        previous = rebuilt
    return torch.istft(magnitude * angles, N_FFT, hop, window=window, length=length)
