"""Try a change to the recipe's video for the last steps of a finished run, in minutes: resume it from a late
checkpoint with the change, to the same last step.

    .venv/bin/python benchmarks/video_last_steps.py --model runs/omni --out runs/last-steps --from-step 2250
        [--tokens-per-step N] [--loss-weight W] [--kinds order:3,time:3,...]
    hepta eval --model runs/last-steps --task video-time --json

It copies the run's folder to --out without the checkpoints after --from-step, and continues the run from
there with the recipe's video changed as given, everything else as the run had it (the same batches of
text, conversations and clips step by step, the same learning rate schedule), so the folder it writes
differs from the finished run's only by what the change did over those steps. The run's own folder is
the control. A checkpoint is kept every `save_every` steps (250 in the recipe) and only the last two, so
--from-step is the one before the last.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path

from hepta.train import recipes
from hepta.train.loop import Trainer, load_args

from video_finetune import parse_kinds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a finished run's folder (hepta train --preset omni-tiny)")
    p.add_argument("--out", required=True)
    p.add_argument("--from-step", type=int, required=True, help="the checkpoint to continue from")
    p.add_argument("--tokens-per-step", type=int, help="video tokens a step (the recipe's: 2,400)")
    p.add_argument("--loss-weight", type=float, help="how many times the video loss counts")
    p.add_argument("--kinds", type=parse_kinds, help="question kinds and weights, e.g. order:3,time:3,count:1,at:1")
    args = p.parse_args()
    model, out = Path(args.model), Path(args.out)
    checkpoint = f"step_{args.from_step:08d}"
    if not (model / "train_state" / checkpoint).is_dir():
        raise SystemExit(f"{model} has no checkpoint at step {args.from_step}; its checkpoints: "
                         f"{', '.join(sorted(d.name for d in (model / 'train_state').glob('step_*')))}")
    later = {d.name for d in (model / "train_state").glob("step_*") if d.name > checkpoint}
    shutil.copytree(model, out, ignore=lambda _folder, names: [n for n in names if n in later])
    (out / "train_state" / "latest").write_text(checkpoint)
    run = load_args(out)
    changes = {name: value for name, value in (("tokens_per_step", args.tokens_per_step),
                                               ("loss_weight", args.loss_weight), ("kinds", args.kinds))
               if value is not None}
    recipe = recipes.IMAGE_RECIPES[run.preset]
    recipes.IMAGE_RECIPES[run.preset] = dataclasses.replace(recipe, video=dataclasses.replace(recipe.video, **changes))
    result = Trainer(dataclasses.replace(run, out=str(out)), resume=True).run()
    print(f"continued {model} from step {args.from_step} to {result.steps} with {changes or 'the recipe'}; "
          f"validation loss {result.val_loss_after:.3f}; model in {out}")


if __name__ == "__main__":
    main()
