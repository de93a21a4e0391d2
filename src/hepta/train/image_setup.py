"""The image side of a run: its image tokenizer (trained here, given, or reused on resume) and
the conversations it trains on (the embedded digits, or a user's chat JSONL)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from hepta.fileio import atomic_write_text
from hepta.modality import digits
from hepta.modality.codec import ImageCodec
from hepta.modality.image_tokenizer import IMAGE_TOKENIZER_DIR, ImageTokenizer
from hepta.modality.image_train import timed_training
from hepta.tokenizer import Tokenizer
from hepta.train.conversations import (Conversations, conversation_images, digit_conversations, read_conversations,
                                       tokenize_conversations)
from hepta.train.recipes import ImageRecipe
from hepta.train.run_tokenizer import run_tokenizer

REPORT_FILE = "report.json"
GRID_FILE = "reconstructions.png"


@dataclass
class ImageData:
    num_codes: int
    image_tokenizer: ImageTokenizer | None  # None in a text-only baseline run
    source: str
    conversation_file: Path | None
    augment: bool = True

    def codec(self, tokenizer: Tokenizer) -> ImageCodec:
        return ImageCodec.of(self.image_tokenizer, tokenizer)

    def conversations(self, tokenizer: Tokenizer) -> Conversations:
        codec = self.codec(tokenizer)
        if self.conversation_file is None:
            return digit_conversations(codec, augment=self.augment)
        raw = read_conversations(self.conversation_file, codec.image_size, codec.channels)
        return Conversations(tokenize_conversations(raw, codec))


def prepare_image_data(recipe: ImageRecipe, run_dir: Path, conversation_file: str | None, args, is_main: bool,
                       barrier: Callable[[], None], resume: bool, log: Callable[[str], None]) -> ImageData:
    source = str(conversation_file) if conversation_file else "scikit-learn's digits, the first 80% (1,438 scans)"
    folder = run_dir / IMAGE_TOKENIZER_DIR
    if args.text_only:
        return ImageData(recipe.image_tokenizer.codebook_size, None, source, None)
    tokenizer = run_tokenizer(folder, args.image_tokenizer, ImageTokenizer.load,
                              lambda: _train(recipe, folder, conversation_file, args, log), "image", is_main, barrier,
                              resume, log)
    return ImageData(tokenizer.codebook_size, tokenizer, source,
                     Path(conversation_file) if conversation_file else None, augment=args.augment)


def _train(recipe: ImageRecipe, folder: Path, conversation_file: str | None, args, log) -> ImageTokenizer:
    config = recipe.image_tokenizer
    if conversation_file:
        images = conversation_images(read_conversations(Path(conversation_file), config.image_size, config.channels))
        val_images, val_name = images, "the conversations' own images (no held-out split)"
    else:
        images = digits.tokenizer_training_images(digits.load_digits_split("train"))
        val_images, val_name = digits.load_digits_split("held_out").images, "the held-out 20% of the digits"
    steps = args.image_tokenizer_steps or recipe.image_tokenizer_steps
    log(f"image tokenizer: training on {len(images):,} images for {steps} steps "
        f"({config.codebook_size} codes, {config.grid_size}x{config.grid_size} per image)")
    tokenizer, report = timed_training(images, val_images, config, steps, grid_png=folder / GRID_FILE)
    tokenizer.save(folder)
    atomic_write_text(folder / REPORT_FILE, json.dumps({**asdict(report), "grid_png": str(report.grid_png),
                                                        "evaluated_on": val_name}, indent=2) + "\n")
    log(f"image tokenizer: PSNR {report.psnr_db:.1f} dB on {val_name}, {report.codes_used} codes used, "
        f"{report.seconds:.0f} s; originals beside reconstructions in {folder / GRID_FILE}")
    return tokenizer
