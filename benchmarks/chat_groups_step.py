"""The omni-tiny recipe's training step with its conversations packed or padded, in a number of length groups.

    .venv/bin/python benchmarks/chat_groups_step.py --model runs/omni [--variants padded:3,packed:3,packed:6]
        [--rounds 7] [--utterances 3000] [--at-step 1500]

It builds the recipe's run as `hepta train --preset omni-tiny` does (the tokenizers of a trained
folder, `--utterances` recognition utterances), loads that folder's trained weights, and times
whole training steps (text, conversations and video, backward and AdamW) at `--at-step` of the
2,500, where the clips are as long as they get, for each of `--variants` in turn: `padded:G` runs the
conversations as G padded batches of like lengths (`--padded-conversations --chat-length-groups G`), `packed:G`
as one forward with no padding whose attention runs in G groups (`--chat-length-groups G`, model/packed_rows.py;
the clips packed likewise); interleaved, the median over rounds (benchmarks/_timing.py). Neither changes what a
step learns (the answers' losses add up the same: tests/train/test_omni_train.py, tests/model/test_packed_rows.py),
so the step time is all that moves; the share of padding each group count leaves is what
benchmarks/chat_padding.py prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

from hepta.checkpoint import load_hepta_folder
from hepta.train.loop import Trainer, TrainArgs
from hepta.train.recipes import recipe_defaults

from _timing import interleaved, median


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a folder trained with --preset omni-tiny")
    p.add_argument("--variants", default="padded:3,packed:3,packed:6")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--utterances", type=int, default=3000)
    p.add_argument("--at-step", type=int, default=1500)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as out:
        tokenizers = {"image_tokenizer": f"{args.model}/image_tokenizer",
                      "audio_tokenizer": f"{args.model}/audio_tokenizer"}
        run = TrainArgs(out=out, preset="omni-tiny",
                        **{**recipe_defaults("omni-tiny"), **tokenizers, "speech_utterances": args.utterances})
        trainer = Trainer(run, log=lambda _msg: None)
        trainer.model.load_state_dict(load_hepta_folder(args.model).state_dict())
        trainer.step = args.at_step

        def step_with(variant: str):
            form, groups = variant.split(":")
            def run() -> float:
                trainer.args = dataclasses.replace(trainer.args, chat_length_groups=int(groups),
                                                   packed_conversations=form == "packed")
                start = time.perf_counter()
                trainer.train_step()
                trainer.step = args.at_step  # every round draws the same batches
                return time.perf_counter() - start
            return run

        variants = args.variants.split(",")
        times, stats = interleaved({v: step_with(v) for v in variants}, rounds=args.rounds, warmup=1)
    base = median(times[variants[0]])
    print(f"{args.rounds} rounds at step {args.at_step} ({stats['redone_rounds']} redone)")
    for v in variants:
        print(f"{v}: {median(times[v]):.3f} s a step, {median(times[v]) / base:.3f}x {variants[0]}'s")


if __name__ == "__main__":
    main()
