"""Training the image tokenizer: reconstruction loss, PSNR on held-out images, a picture of both.

`hepta tokenizer train image` and the omni recipe of `hepta train` both call `train_image_tokenizer`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hepta.modality.image_tokenizer import ImageTokenizer, ImageTokenizerConfig
from hepta.modality.tokenizer_folder import set_cosine_lr


@dataclass
class ImageTokenizerReport:
    psnr_db: float  # mean over held-out images, peak 1.0
    num_val_images: int
    codes_used: int  # distinct codes the held-out images use
    seconds: float
    grid_png: Path | None = None


def psnr(reconstructed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [0, 1]."""
    mse = ((reconstructed - original) ** 2).flatten(1).mean(dim=1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


def train_image_tokenizer(train_images: np.ndarray, config: ImageTokenizerConfig = ImageTokenizerConfig(),
                          steps: int = 1500, batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                          progress=None) -> ImageTokenizer:
    """Fit the autoencoder to images [N, P, S, S] in [0, 1]; `progress(step, loss)` is called now and then."""
    torch.manual_seed(seed)
    tokenizer = ImageTokenizer(config)
    optimizer = torch.optim.AdamW(tokenizer.parameters(), lr=lr, weight_decay=0.0)
    images = torch.as_tensor(train_images, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    tokenizer.train()
    for step in range(steps):
        set_cosine_lr(optimizer, lr, step, steps)
        batch = images[torch.randint(0, len(images), (batch_size,), generator=generator)]
        loss = F.mse_loss(tokenizer(batch), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if progress is not None and (step % 50 == 0 or step == steps - 1):
            progress(step + 1, loss.item())
    return tokenizer.eval()


def evaluate_image_tokenizer(tokenizer: ImageTokenizer, val_images: np.ndarray, seconds: float = 0.0,
                             grid_png: Path | None = None) -> ImageTokenizerReport:
    images = torch.as_tensor(val_images, dtype=torch.float32)
    codes = tokenizer.encode(images)
    reconstructed = tokenizer.decode(codes)
    report = ImageTokenizerReport(psnr_db=psnr(reconstructed, images).mean().item(), num_val_images=len(images),
                                  codes_used=int(codes.unique().numel()), seconds=seconds)
    if grid_png is not None:
        save_comparison_grid(images[:32].numpy(), reconstructed[:32].numpy(), grid_png,
                             title=f"held-out originals (left) and reconstructions (right): PSNR {report.psnr_db:.1f} dB")
        report.grid_png = grid_png
    return report


def save_comparison_grid(originals: np.ndarray, reconstructed: np.ndarray, path: Path, title: str) -> None:
    """Pairs of images side by side, 8 pairs per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(originals)
    cols, rows = 8, math.ceil(n / 8)
    fig, axes = plt.subplots(rows, cols * 2, figsize=(cols * 2 * 0.8, rows * 0.9 + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        r, c = divmod(i, cols)
        for k, image in enumerate((originals[i], reconstructed[i])):
            axes[r][2 * c + k].imshow(_display(image), cmap="gray_r" if image.shape[0] == 1 else None, vmin=0, vmax=1)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _display(image_PSS: np.ndarray) -> np.ndarray:
    return image_PSS[0] if image_PSS.shape[0] == 1 else image_PSS.transpose(1, 2, 0)


def timed_training(train_images: np.ndarray, val_images: np.ndarray, config: ImageTokenizerConfig, steps: int,
                   grid_png: Path | None = None, progress=None) -> tuple[ImageTokenizer, ImageTokenizerReport]:
    started = time.perf_counter()
    tokenizer = train_image_tokenizer(train_images, config, steps=steps, progress=progress)
    return tokenizer, evaluate_image_tokenizer(tokenizer, val_images, time.perf_counter() - started, grid_png)
