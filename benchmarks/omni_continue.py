"""A probe of a longer omni run: continue a trained omni-tiny folder with the recipe's whole mix.

    .venv/bin/python benchmarks/omni_continue.py --model runs/omni --out runs/omni-more [--steps 500]
        [--lr 1e-3] [--long-share 0.5] [--shifted-clocks 0] [--no-frame-views] [--mark-joiner ""]
        [--mark-units-anchor ,] [--time-tokens] [--mark-weight 4] [--seed 0]
    hepta eval --model runs/omni-more --task video-time --json

It trains a new run in --out from the folder's weights, tokenizer, image and audio tokenizers: text, images,
speech and video as `hepta train --preset omni-tiny` mixes them, with a fresh optimizer and a cosine schedule
over --steps. The video clips of a step are drawn as the recipe draws them at its end (log-uniformly, up to the
longest), except in --long-share of the steps, drawn from `VideoRecipe.long_shortest` seconds up to the longest.
With --shifted-clocks, that share of the clips has its clock start after 0:00 (`hepta train --video-shifted-clocks`);
with --no-frame-views, the clips show each digit as its training scan only (`hepta train --no-video-frame-views`);
--mark-joiner sets what goes between a mark and its answer (`VideoRecipe.mark_joiner`), --mark-units-anchor
a token before a marked time's last digit (`VideoRecipe.mark_units_anchor`); --time-tokens writes the timestamps'
digits in tokens of their own (`hepta train --video-time-tokens`); --mark-weight counts each caption's mark decision
that many times in the loss (`hepta train --video-mark-weight`).
Where `benchmarks/video_finetune.py` trains video alone, this keeps every modality in each step, so it tells
what more steps of long clips do to the video answers without the other tasks forgetting theirs.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from safetensors.torch import load_file

from hepta.modality.video_reading import VideoReading
from hepta.modality.video_span import StampForm
from hepta.tokenizer import Tokenizer
from hepta.train.loop import Trainer, TrainArgs
from hepta.train.recipes import IMAGE_RECIPES, recipe_defaults
from hepta.train.video_setup import VideoData, log_uniform_seconds


class Continued(Trainer):
    """A run whose text tokenizer is the trained folder's, so its ids mean what the weights learned."""

    def __init__(self, source: Path, args: TrainArgs):
        self.source = source  # read while the run sets up
        super().__init__(args, log=print)

    def _tokenizer(self, docs) -> Tokenizer:
        tokenizer = Tokenizer.load(self.source)
        tokenizer.save(self.run_dir)
        return tokenizer


def long_share_draw(share: float):
    """VideoData.step_seconds drawing long clips in `share` of the steps, the recipe's end draw in the rest."""
    recipe_draw = VideoData.step_seconds

    def step_seconds(data: VideoData, rng: np.random.Generator, progress: float) -> int:
        if rng.uniform() < share:
            return log_uniform_seconds(rng, data.recipe.long_shortest, data.recipe.seconds[1])
        return recipe_draw(data, rng, 1.0)  # the curriculum is over: every length up to the longest

    return step_seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a folder hepta train --preset omni-tiny wrote")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--long-share", type=float, default=0.5, help="the share of steps whose clips are long")
    p.add_argument("--shifted-clocks", type=float, help="the share of clips whose clock starts after 0:00 "
                   "(default: the recipe's)")
    p.add_argument("--no-frame-views", action="store_true", help="video clips show each digit as its training scan "
                   "only (the recipe draws one of its moved and turned views)")
    p.add_argument("--mark-joiner", help="what goes between a caption's mark and its answer (default: the recipe's, "
                   "a space; \"\" writes the time's first digit as the timestamps do)")
    p.add_argument("--mark-units-anchor", help="a token before the last digit of a marked time (\",\": \"0m1,4\"; "
                   "default: the recipe's, none)")
    p.add_argument("--time-tokens", action="store_true", help="the frames' timestamps in time tokens "
                   "(`hepta train --video-time-tokens`; default: as the model learned to read them)")
    p.add_argument("--mark-weight", type=float, help="how many times each caption's mark decision counts in the loss "
                   "(`hepta train --video-mark-weight`; default: the recipe's)")
    p.add_argument("--mark-weight-moves", action="store_true", help="the mark weight takes its share from the "
                   "caption's other tokens (`hepta train --video-mark-weight-moves`)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    source = Path(args.model)
    VideoData.step_seconds = long_share_draw(args.long_share)
    marks = {name: value for name, value in (("mark_joiner", args.mark_joiner),
                                             ("mark_units_anchor", args.mark_units_anchor)) if value is not None}
    if marks:
        recipe = IMAGE_RECIPES["omni-tiny"]
        IMAGE_RECIPES["omni-tiny"] = dataclasses.replace(recipe, video=dataclasses.replace(recipe.video, **marks))
    # the recipe's batches, corpus and warm-up; its own steps, learning rate, and one save and evaluation at the end
    stamps = StampForm.TIME if args.time_tokens else VideoReading.load(source).stamps
    train_args = TrainArgs(**{**recipe_defaults("omni-tiny"), "steps": args.steps, "lr": args.lr,
                              "save_every": args.steps, "eval_every": args.steps,
                              "video_shifted_clocks": args.shifted_clocks,
                              "video_frame_views": not args.no_frame_views, "video_mark_weight": args.mark_weight,
                              "video_mark_weight_moves": args.mark_weight_moves, "video_stamps": stamps.value},
                           out=args.out, preset="omni-tiny", seed=args.seed,
                           image_tokenizer=str(source / "image_tokenizer"),
                           audio_tokenizer=str(source / "audio_tokenizer"))
    trainer = Continued(source, train_args)
    trainer.model.load_state_dict(load_file(source / "model.safetensors"))  # strict: the same preset's shapes
    trainer.run(quiet=True)
    print(f"saved {args.out}; measure it with hepta eval --model {args.out} --task video-time --json")


if __name__ == "__main__":
    main()
