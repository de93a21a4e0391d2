"""`hepta tokenizer train image|audio`: train an image tokenizer on a folder of images or the
bundled digits, or an audio tokenizer on the embedded eSpeak NG speech.

The folders they write are what `hepta train --image-tokenizer DIR` / `--audio-tokenizer DIR`
take, and what a model folder holds as `image_tokenizer/` / `audio_tokenizer/`.
"""

from __future__ import annotations

import argparse
import json
import zlib
from dataclasses import asdict
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")
HOLD_OUT_EVERY = 10  # about 1 image in 10 of a user folder (by a hash of its name) measures PSNR


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    from hepta.train.recipes import IMAGE_RECIPES

    default = IMAGE_RECIPES["omni-tiny"]
    speech = default.speech
    p = subparsers.add_parser("tokenizer", help="train a modality tokenizer")
    kinds = p.add_subparsers(dest="tokenizer_command", required=True, metavar="ACTION")
    train = kinds.add_parser("train", help="train a tokenizer").add_subparsers(dest="modality", required=True,
                                                                             metavar="MODALITY")
    image = train.add_parser("image", help="an FSQ autoencoder mapping images to a grid of codes and back")
    image.add_argument("--data", help="folder of PNG/JPEG images, searched recursively (default: scikit-learn's "
                       "digits, the first 80%% and their edits; PSNR on the last 20%%)")
    image.add_argument("--out", required=True, help="output folder")
    image.add_argument("--steps", type=int, default=default.image_tokenizer_steps)
    image.add_argument("--image-size", type=int, default=default.image_tokenizer.image_size, help="side in pixels")
    image.add_argument("--channels", type=int, default=default.image_tokenizer.channels, help="1 grey or 3 RGB")
    image.add_argument("--downsample", type=int, default=default.image_tokenizer.downsample,
                       help="pixels per code side (a power of two)")
    image.add_argument("--levels", default=",".join(map(str, default.image_tokenizer.levels)),
                       help="FSQ levels per latent channel; the codebook is their product")
    image.add_argument("--json", action="store_true", help="print one JSON object")
    image.set_defaults(func=cmd_tokenizer_train_image)

    audio = train.add_parser("audio", help="an FSQ autoencoder mapping 16 kHz speech to codes at a fixed rate and back")
    audio.add_argument("--out", required=True, help="output folder")
    audio.add_argument("--steps", type=int, default=speech.audio_tokenizer_steps)
    audio.add_argument("--utterances", type=int, default=speech.tokenizer_utterances,
                       help="eSpeak NG training utterances in varied voices (plus half as many in the house voice)")
    audio.add_argument("--downsample", type=int, default=speech.audio_tokenizer.downsample,
                       help="10 ms spectrogram frames per code (a power of two): 4 gives 25 codes a second")
    audio.add_argument("--levels", default=",".join(map(str, speech.audio_tokenizer.levels)),
                       help="FSQ levels per latent channel; the codebook is their product")
    audio.add_argument("--hidden", type=int, default=speech.audio_tokenizer.hidden, help="convolution channels")
    audio.add_argument("--json", action="store_true", help="print one JSON object")
    audio.set_defaults(func=cmd_tokenizer_train_audio)


def cmd_tokenizer_train_audio(args: argparse.Namespace) -> None:
    from hepta.errors import HeptaError
    from hepta.modality.audio_tokenizer_config import AudioTokenizerConfig
    from hepta.train.recipes import SpeechRecipe
    from hepta.train.speech_setup import REPORT_FILE, speech_utterances, train_in_run

    try:
        levels = tuple(int(level) for level in args.levels.split(","))
        config = AudioTokenizerConfig(downsample=args.downsample, hidden=args.hidden, levels=levels)
    except ValueError as e:
        raise HeptaError(f"the audio tokenizer settings are invalid: {e}") from e
    for flag in ("steps", "utterances"):
        if getattr(args, flag) <= 0:
            raise HeptaError(f"--{flag} must be positive, got {getattr(args, flag)}")
    recipe = SpeechRecipe(config, args.steps, args.utterances, max(1, args.utterances // 2),
                          tokenizer_utterances=args.utterances)
    recognition, synthesis = speech_utterances(recipe, seed=0)
    out = Path(args.out)
    train_in_run(recipe, out, [u.wave for u in recognition + synthesis], args.steps,
                 log=(lambda line: None) if args.json else print)
    report = json.loads((out / REPORT_FILE).read_text())
    if args.json:
        print(json.dumps({**report, "codebook_size": config.codebook_size,
                          "codes_per_second": config.codes_per_second, "config": asdict(config), "out": str(out)}))


def cmd_tokenizer_train_image(args: argparse.Namespace) -> None:
    import numpy as np

    from hepta.errors import HeptaError
    from hepta.modality import digits
    from hepta.modality.image_io import ImageInputError, decode_image
    from hepta.modality.image_tokenizer_config import ImageTokenizerConfig
    from hepta.modality.image_train import timed_training
    from hepta.train.image_setup import GRID_FILE

    try:
        levels = tuple(int(level) for level in args.levels.split(","))
        config = ImageTokenizerConfig(image_size=args.image_size, channels=args.channels,
                                      downsample=args.downsample, levels=levels)
    except ValueError as e:
        raise HeptaError(f"the image tokenizer settings are invalid: {e}") from e
    if args.steps <= 0:
        raise HeptaError(f"--steps must be positive, got {args.steps}")
    if args.data:
        folder = Path(args.data)
        files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        if not files:
            raise HeptaError(f"--data {args.data} is not a folder holding PNG or JPEG images; point it at one")
        train, val = [], []
        for f in files:
            try:
                pixels = decode_image(f.read_bytes(), config.image_size, config.channels)
            except ImageInputError as e:
                raise HeptaError(f"{f}: {e}") from e
            is_val = zlib.crc32(str(f.relative_to(folder)).encode()) % HOLD_OUT_EVERY == 0
            (val if is_val and len(files) >= HOLD_OUT_EVERY else train).append(pixels)
        train_images = np.stack(train)
        val_images, val_name = (np.stack(val), "held-out images of the folder") if val else (train_images, "the training images")
    else:
        train_images = digits.tokenizer_training_images(digits.load_digits_split("train"))
        val_images, val_name = digits.load_digits_split("held_out").images, "the held-out 20% of the digits"
    out = Path(args.out)
    tokenizer, report = timed_training(train_images, val_images, config, args.steps, grid_png=out / GRID_FILE)
    tokenizer.save(out)
    result = {"psnr_db": round(report.psnr_db, 2), "evaluated_on": val_name, "num_val_images": report.num_val_images,
              "codebook_size": config.codebook_size, "codes_used": report.codes_used,
              "grid": [config.grid_size, config.grid_size], "seconds": round(report.seconds, 1),
              "config": asdict(config), "out": str(out), "reconstructions": str(out / GRID_FILE)}
    if args.json:
        print(json.dumps(result))
        return
    print(f"image tokenizer in {out}: {config.codebook_size} codes, {config.grid_size}x{config.grid_size} per image; "
          f"PSNR {report.psnr_db:.1f} dB on {val_name} ({report.num_val_images} images), "
          f"{report.seconds:.0f} s; originals beside reconstructions in {out / GRID_FILE}")
