"""A small model folder that reads and writes images and speech, built in seconds (untrained unless asked)."""

from __future__ import annotations

from pathlib import Path

import torch

from hepta.checkpoint import build_model, save_model
from hepta.config import get_preset
from hepta.modality.audio_tokenizer import AUDIO_TOKENIZER_DIR, AudioTokenizer
from hepta.modality.audio_tokenizer_config import AudioTokenizerConfig
from hepta.modality.digits import DRAW_PROMPT, EDIT_PROMPTS, RECOGNISE_PROMPT
from hepta.modality.speech_tasks import SAY_PROMPT, TRANSCRIBE_PROMPT
from hepta.modality.image_tokenizer import IMAGE_TOKENIZER_DIR, ImageTokenizer, ImageTokenizerConfig
from hepta.tokenizer import Tokenizer

FIXTURE_TEXTS = [RECOGNISE_PROMPT, *EDIT_PROMPTS.values(), *(DRAW_PROMPT.format(digit=d) for d in range(10)),
                 TRANSCRIBE_PROMPT, SAY_PROMPT.format(text="turn on the lights"),
                 "def hello(world):\n    return world + 1\n", "the quick brown fox jumps over the lazy dog"]


def make_omni_folder(folder: Path, num_layers: int = 2, seed: int = 0, audio: bool = True,
                     max_seq_len: int = 512) -> Path:
    """config.json, model.safetensors, tokenizer.json with an image code block (and an audio code
    block after it), image_tokenizer/ (and audio_tokenizer/, an untrained one of 1000 codes)."""
    torch.manual_seed(seed)  # the same folder every time
    image_tokenizer = ImageTokenizer(ImageTokenizerConfig(levels=(5, 5, 5), hidden=16))
    with torch.no_grad():  # untrained, every image lands near the middle code; spread out, different
        image_tokenizer.encoder[-1].weight.mul_(30)  # pictures get different codes, as a trained tokenizer gives
    audio_tokenizer = AudioTokenizer(AudioTokenizerConfig(hidden=16)) if audio else None
    tokenizer = Tokenizer.train(FIXTURE_TEXTS * 20, text_vocab_size=300).with_image_codes(image_tokenizer.codebook_size)
    if audio_tokenizer is not None:
        tokenizer = tokenizer.with_audio_codes(audio_tokenizer.codebook_size)
    cfg = get_preset("tiny").with_changes({"vocab_size": tokenizer.vocab_size, "num_layers": num_layers,
                                           "moe.num_dense_layers": 1, "max_seq_len": max_seq_len})
    folder.mkdir(parents=True, exist_ok=True)
    save_model(build_model(cfg, seed=seed), folder)
    tokenizer.save(folder)
    image_tokenizer.save(folder / IMAGE_TOKENIZER_DIR)
    if audio_tokenizer is not None:
        audio_tokenizer.save(folder / AUDIO_TOKENIZER_DIR)
    return folder
