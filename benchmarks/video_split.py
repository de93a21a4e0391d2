"""Does a video model read the digits it trained on better than held-out ones? The same evaluation twice: clips
of held-out digits, as `hepta eval` has them, and clips planned the same way from the training digits.

    .venv/bin/python benchmarks/video_split.py --model runs/omni [--task video-order] [--clips 40]

Printed per split: the task's accuracy over all clips and per clip length. A model that learned the training
digits' code grids by heart, rather than to read digits, answers about clips of them far better (docs/multimodal.md:
the recipe's model before its clips showed views of the digits, order 0.942 against 0.842).
"""

from __future__ import annotations

import argparse
import dataclasses

from hepta.eval.video_tasks import TASK_KINDS, VideoEval
from hepta.loading import load, load_image_codec, load_tokenizer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--task", default="video-order", choices=list(TASK_KINDS))
    p.add_argument("--clips", type=int, default=40, help="clips per length")
    args = p.parse_args()
    model, tokenizer = load(args.model), load_tokenizer(args.model)
    model.eval()
    evaluation = VideoEval.open(model, tokenizer, load_image_codec(args.model, tokenizer), args.model, args.clips)
    try:
        for split in ("held_out", "train"):
            result = dataclasses.replace(evaluation, digits_split=split).task(args.task)
            lengths = " / ".join(f"{v['accuracy']:.3f}" for v in result["by_length"].values())
            print(f"{args.task}, digits {split}: {result['accuracy']:.3f} ({lengths} at "
                  f"{' / '.join(result['by_length'])} s)")
    finally:
        evaluation.close()


if __name__ == "__main__":
    main()
