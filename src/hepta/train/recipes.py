"""Training recipes of the presets whose vocabulary holds image codes.

`hepta train --preset omni-tiny --out DIR`, with no other flag, runs the whole documented recipe:
the image tokenizer, the text tokenizer with the image code block appended, and the model on the
mixture of the text corpus and the conversations. The flags a user gives override these defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hepta.modality.image_tokenizer_config import ImageTokenizerConfig


@dataclass(frozen=True)
class ImageRecipe:
    image_tokenizer: ImageTokenizerConfig
    image_tokenizer_steps: int
    train_defaults: dict = field(default_factory=dict)  # TrainArgs fields


IMAGE_RECIPES = {
    # 8x8 grey digits -> 4x4 codes of 5*5*5 = 125 (26 dB PSNR on held-out digits; 8*5*5*5 = 1000
    # codes gain 1.4 dB, but a model that sees 1,438 training digits learns 125 codes far better).
    "omni-tiny": ImageRecipe(
        image_tokenizer=ImageTokenizerConfig(image_size=8, channels=1, downsample=2, hidden=64, levels=(5, 5, 5)),
        image_tokenizer_steps=1500,
        train_defaults=dict(steps=2000, batch_size=8, seq_len=256, chat_batch_size=64, lr=3e-3, warmup=20,
                            save_every=250, eval_every=250, eval_batches=8, max_corpus_mb=12),
    ),
}


def image_recipe(preset: str) -> ImageRecipe | None:
    return IMAGE_RECIPES.get(preset)


def recipe_defaults(preset: str | None) -> dict:
    recipe = image_recipe(preset or "")
    return dict(recipe.train_defaults) if recipe else {}
