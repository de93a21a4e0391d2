"""How much of a step's conversation batch is padding, in one batch and in groups of like lengths.

    .venv/bin/python benchmarks/chat_padding.py --model runs/omni [--rows 128] [--draws 300]
        [--utterances 3000] [--groups 1,2,3,4,6,8]

It builds the omni-tiny recipe's conversation mixture (the digit tasks, and recognition and
synthesis over `--utterances` and half as many utterances, at the recipe's shares) with the
tokenizers of a trained folder, draws `--draws` steps of `--rows` conversations as training does,
and prints, for each number of length groups in --groups (`--chat-length-groups`), the share of the positions the
forward runs over that are padding.
"""

from __future__ import annotations

import argparse

import torch

from hepta.loading import load_tokenizer
from hepta.modality.audio_tokenizer import load_audio_tokenizer
from hepta.modality.image_tokenizer import load_image_tokenizer
from hepta.train.conversations import encode_examples, mix, sample_chat_batch
from hepta.train.image_setup import ImageData
from hepta.train.recipes import image_recipe
from hepta.train.speech_setup import SpeechData


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a folder trained with --preset omni-tiny")
    p.add_argument("--rows", type=int, default=128)
    p.add_argument("--draws", type=int, default=300)
    p.add_argument("--utterances", type=int, default=3000)
    p.add_argument("--groups", default="1,2,3,4,6,8", help="the numbers of length groups to measure")
    args = p.parse_args()
    recipe = image_recipe("omni-tiny")
    tokenizer = load_tokenizer(args.model)
    images = ImageData(recipe.image_tokenizer.codebook_size, load_image_tokenizer(args.model), "digits", None)
    speech = SpeechData(recipe.speech.audio_tokenizer.codebook_size, load_audio_tokenizer(args.model), recipe.speech,
                        0, args.utterances, args.utterances // 2)
    conversations = mix(images.conversations(tokenizer), speech.conversations(tokenizer), speech.share)
    examples = encode_examples(conversations, tokenizer, images.codec(tokenizer), 256,
                               speech.codec(tokenizer).vocab)
    print(f"{len(examples):,} conversations, {args.draws} draws of {args.rows}")
    pad = tokenizer.special_ids["<|pad|>"]
    for groups in (int(g) for g in args.groups.split(",")):
        generator, real, run_over = torch.Generator().manual_seed(0), 0, 0
        for _ in range(args.draws):
            for x, _y in sample_chat_batch(examples, args.rows, generator, length_groups=groups):
                real, run_over = real + int((x != pad).sum()), run_over + x.numel()
        name = f"{groups} length group{'s' if groups > 1 else ''}"
        print(f"{name}: {1 - real / run_over:.1%} of the positions are padding")


if __name__ == "__main__":
    main()
