"""Training the audio tokenizer: spectrogram reconstruction, and its distance on held-out speech.

`hepta tokenizer train audio` and the omni recipe of `hepta train` both call `timed_training`.
The loss is L1 between the decoder's log-magnitude spectrogram and the clip's own, with
magnitudes below `TARGET_FLOOR` (about -60 dB of full scale) counted as that floor: the decoder
need not model the exact level of silence, which Griffin-Lim cannot reproduce anyway.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from hepta.modality import audio_features
from hepta.modality.audio_tokenizer import AudioTokenizer
from hepta.modality.audio_tokenizer_config import AudioTokenizerConfig
from hepta.modality.tokenizer_folder import set_cosine_lr

TARGET_FLOOR = -7.0
# FSQ squashes the encoder's output with tanh; nothing in the reconstruction loss stops that output
# from growing until every channel sits at its two extreme levels (a measured collapse to ~20 of
# 1000 codes). A penalty on the part beyond RAW_BOUND keeps it where the levels between are reachable.
RAW_BOUND = 2.0
RAW_PENALTY = 0.1
CROP_FRAMES = 128  # 1.28 s per training example


@dataclass
class AudioTokenizerReport:
    mel_distance: float  # mean |log-mel(original) - log-mel(reconstruction)| over held-out clips (natural log)
    num_val_clips: int
    codes_used: int  # distinct codes the held-out clips use
    seconds: float


def _features(waves: Sequence[np.ndarray], tokenizer: AudioTokenizer) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per clip: encoder input [M, F] and target log-magnitude [B, F], on the same frames."""
    inputs, targets = [], []
    for wave in waves:
        wave_1S = torch.as_tensor(wave, dtype=torch.float32)[None]
        log_mel_MF = tokenizer.frames(wave_1S)[0]
        padded_samples = (log_mel_MF.shape[-1] - 1) * audio_features.HOP
        padded = F.pad(wave_1S, (0, padded_samples - wave_1S.shape[-1]))
        inputs.append(log_mel_MF)
        targets.append(audio_features.log_magnitude(padded)[0].clamp_min(TARGET_FLOOR))
    return inputs, targets


def _crops(inputs: list[torch.Tensor], targets: list[torch.Tensor], batch_size: int, ds: int,
           generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    picks = torch.randint(0, len(inputs), (batch_size,), generator=generator).tolist()
    x = torch.full((batch_size, inputs[0].shape[0], CROP_FRAMES), inputs[0].min().item())
    y = torch.full((batch_size, targets[0].shape[0], CROP_FRAMES), TARGET_FLOOR)
    for row, clip in enumerate(picks):
        frames = inputs[clip].shape[-1]
        start = 0 if frames <= CROP_FRAMES else \
            int(torch.randint(0, (frames - CROP_FRAMES) // ds + 1, (1,), generator=generator)) * ds
        width = min(CROP_FRAMES, frames - start)
        x[row, :, :width] = inputs[clip][:, start:start + width]
        y[row, :, :width] = targets[clip][:, start:start + width]
    return x, y


def train_audio_tokenizer(waves: Sequence[np.ndarray], config: AudioTokenizerConfig = AudioTokenizerConfig(),
                          steps: int = 1500, batch_size: int = 32, lr: float = 2e-3, seed: int = 0,
                          progress=None) -> AudioTokenizer:
    """Fit the autoencoder to 16 kHz clips; `progress(step, loss)` is called now and then."""
    torch.manual_seed(seed)
    tokenizer = AudioTokenizer(config)
    silence = tokenizer.frames(torch.zeros(1, audio_features.HOP))[0].min().item()
    inputs, targets = _features(waves, tokenizer)
    inputs = [x.clamp_min(silence) for x in inputs]
    optimizer = torch.optim.AdamW(tokenizer.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    tokenizer.train()
    for step in range(steps):
        set_cosine_lr(optimizer, lr, step, steps)
        x, y = _crops(inputs, targets, batch_size, config.downsample, generator)
        rebuilt, raw = tokenizer(x)
        loss = F.l1_loss(rebuilt, y) + RAW_PENALTY * (raw.abs() - RAW_BOUND).clamp_min(0).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tokenizer.parameters(), 1.0)
        optimizer.step()
        if progress is not None and (step % 50 == 0 or step == steps - 1):
            progress(step + 1, loss.item())
    return tokenizer.eval()


def mel_distance(original: np.ndarray, reconstructed: np.ndarray) -> float:
    """Mean absolute difference of the two clips' log-mel spectrograms (natural log, -60 dB floor)."""
    length = min(len(original), len(reconstructed))
    pair = torch.as_tensor(np.stack([original[:length], reconstructed[:length]]), dtype=torch.float32)
    log_mel = audio_features.log_mel(pair).clamp_min(TARGET_FLOOR)
    return (log_mel[0] - log_mel[1]).abs().mean().item()


def reconstruct(tokenizer: AudioTokenizer, wave: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """The clip's codes [K] and the waveform they decode to, cut to the clip's length."""
    codes = tokenizer.encode(torch.as_tensor(wave, dtype=torch.float32)[None])[0]
    return codes, tokenizer.decode(codes[None])[0, :len(wave)].numpy()


def evaluate_audio_tokenizer(tokenizer: AudioTokenizer, val_waves: Sequence[np.ndarray],
                             seconds: float = 0.0) -> tuple[AudioTokenizerReport, list[np.ndarray]]:
    """The report and the held-out clips' reconstructions (what an intelligibility judge listens to)."""
    distances, used, rebuilt = [], set(), []
    for wave in val_waves:
        codes, out = reconstruct(tokenizer, wave)
        used.update(codes.tolist())
        distances.append(mel_distance(wave, out))
        rebuilt.append(out)
    return AudioTokenizerReport(float(np.mean(distances)), len(val_waves), len(used), seconds), rebuilt


def timed_training(train_waves: Sequence[np.ndarray], val_waves: Sequence[np.ndarray], config: AudioTokenizerConfig,
                   steps: int, progress=None) -> tuple[AudioTokenizer, AudioTokenizerReport, list[np.ndarray]]:
    started = time.perf_counter()
    tokenizer = train_audio_tokenizer(train_waves, config, steps=steps, progress=progress)
    seconds = time.perf_counter() - started
    report, rebuilt = evaluate_audio_tokenizer(tokenizer, val_waves, seconds)
    return tokenizer, report, rebuilt
