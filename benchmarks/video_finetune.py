"""A quick probe of the video training design: fine-tune a trained omni model on video alone.

    .venv/bin/python benchmarks/video_finetune.py --model runs/omni --out runs/video-probe [--steps 800]
        [--lr 3e-3] [--kinds order:3,time:2,...] [--seconds 5:10] [--no-timeline] [--no-time]
        [--all-frames] [--first-only] [--walk] [--captions] [--fused-captions] [--cite] [--question-first]
        [--copy-steps N] [--qk-gain G] [--stamp-digits]
        [--eval-seconds 10,30]
    hepta eval --model runs/video-probe --task video-order --json

It copies the model folder to --out, trains it for --steps on the recipe's video batches
(`train/video_setup.py`) with AdamW and a cosine schedule, and saves the weights; `hepta eval`
then measures it. Minutes instead of the hour of the whole recipe, so a change to the clips, the
questions or the loss can be tried before a full run. `--first-only` asks only "Which digit
appeared first?" about 5-10 s clips and prints the accuracy on fresh clips as it trains: the
smallest check that the model reads the frames at all. `--kinds` and `--seconds` change which
questions are asked and how long the clips are. At the end it prints, per question kind, the share
of 40 fresh 10 s and 30 s clips (--eval-seconds; training digits, then held-out ones) whose whole
answer the model gets right, token by token. `--captions` follows each frame with what it shows
("3 7": the third digit to appear, a 7; "-" for nothing) as a target, `--fused-captions` makes each
caption one token (number, digit and whether the digit is new), and `--cite` has order and
time answers quote the caption they rest on first; `--question-first` puts the question before the
video, so that each frame is read knowing what is asked. `--copy-steps N` first trains N steps on random
text tokens written twice (`train/repeat_task.py`); the share of such a repeat the model predicts
is printed before the video steps either way. `--stamp-digits` writes each frame's timestamp a character
a token (`video_span.timestamp_ids`; a model trained so reads them so without it), and the folder keeps
that for `hepta eval`. `--qk-gain G` multiplies
every query norm's weight by G first, so attention can be sharper from the start. The model's context is
raised to 6,144 tokens in the copy when it is shorter (a folder trained before video).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import time
from pathlib import Path

import numpy as np
import torch

from hepta.checkpoint import save_weights
from hepta.loading import load, load_image_codec, load_tokenizer
from hepta.modality import video_data
from hepta.modality.chat import encode_chat
from hepta.modality.video_reading import VideoReading
from hepta.modality.video_span import StampForm
from hepta.train.conversations import pad_rows
from hepta.train.data import batch_generator
from hepta.train.recipes import image_recipe
from hepta.train.repeat_task import repeat_accuracy, repeat_batch
from hepta.train.video_setup import VideoData

from _finetune import adamw, copy_model, train_step

CONTEXT = 6144
FIRST_ONLY_ROWS = 24


def first_only(data: VideoData, rng: np.random.Generator, answered: bool = True):
    clip = video_data.plan_clip(rng, int(rng.integers(5, 11)), data.scans)
    first = clip.appearances[0].digit
    q = video_data.VideoQuestion("order", "Which digit appeared first?", str(first), first)
    ids = encode_chat(video_data.question_turns(data.clip_frames(clip), [q], answered, data.recipe.question_first),
                      data.tokenizer, data.codec.vocab, add_generation_prompt=not answered)
    return ids, first


def first_only_accuracy(model, data: VideoData, count: int = 40) -> float:
    digit_ids = torch.tensor([data.tokenizer.encode(str(d))[0] for d in range(10)])
    right = 0
    model.eval()
    with torch.no_grad():
        for i in range(count):
            (ids, _), first = first_only(data, np.random.default_rng(10_000 + i), answered=False)
            logits = model(torch.tensor([ids]))[0, -1]
            right += int(logits[digit_ids].argmax()) == first
    model.train()
    return right / count


def answers_right(model, data: VideoData, seconds: int, count: int = 40) -> dict[str, float]:
    """Per question kind, the share of `count` fresh clips of `seconds` (of `data`'s digits) whose
    whole answer the model gets right token by token (teacher-forced, one question a clip). With
    frame captions the whole answer includes every caption, so it is right exactly when greedy
    decoding would write the same captions and answer; "captions" is the share of caption tokens
    right, "<kind> given captions" the answer alone after the true captions, and with `cite` the
    cited caption's number and digit each alone."""
    rng, right = np.random.default_rng(20_000 + seconds), {}
    assistant = data.tokenizer.special_ids["<|assistant|>"]
    model.eval()
    with torch.no_grad():
        for _ in range(count):
            clip = video_data.plan_clip(rng, seconds, data.scans)
            for kind in (*video_data.QUESTION_KINDS, video_data.TIMELINE):
                q = video_data.question(kind, clip, rng, data.recipe.fps, walk=data.recipe.walk, cite=data.recipe.cite)
                turns = video_data.question_turns(data.clip_frames(clip, q), [q],
                                                  question_first=data.recipe.question_first)
                ids, answer = encode_chat(turns, data.tokenizer, data.codec.vocab, add_generation_prompt=False)
                x, is_answer = torch.tensor([ids]), torch.tensor(answer[1:])
                hit = model(x)[0, :-1].argmax(-1) == x[0, 1:]
                right.setdefault(kind, []).append(bool(hit[is_answer].all()))
                if data.captions:
                    after = torch.arange(len(ids) - 1) >= max(i for i, t in enumerate(ids) if t == assistant)
                    right.setdefault(f"{kind} given captions", []).append(bool(hit[is_answer & after].all()))
                    right.setdefault("captions", []).extend(hit[is_answer & ~after].tolist())
                    if data.recipe.cite and q.asked_about is not None:  # the cited number, then its digit
                        first = int(np.flatnonzero((is_answer & after).numpy())[0])
                        right.setdefault(f"{kind} cited number", []).append(bool(hit[first]))
                        right.setdefault(f"{kind} cited digit", []).append(bool(hit[first + 1]))
    model.train()
    return {kind: float(np.mean(hits)) for kind, hits in right.items()}


def fused_captions(tokenizer, appearances: int = video_data.APPEARANCES[1]):
    """A caption function whose caption of a frame is one token: which appearance it is, its digit and whether
    that digit shows for the first time, each (number, digit, first) given a word token of the text vocabulary
    of its own (a stand-in for a block of caption ids). "3 7" needs a look-up in two hops, the number found and
    then the token after it; one token holding both needs one."""
    words = [s for i in range(tokenizer.layout.text_vocab_size)
             if (s := tokenizer.decode([i])).startswith(" ") and s[1:].isalpha() and tokenizer.encode(s) == [i]]
    keys = [(n, d, first) for n in range(1, appearances + 1) for d in range(10) for first in (True, False)]
    symbol = dict(zip(keys, words[-len(keys):]))  # the rarest words, whose text meaning is weakest

    def caption_of(clip: video_data.Clip, seconds: float) -> str:
        shown = clip.on_screen(seconds)
        if shown is None:
            return video_data.EMPTY
        n = clip.appearances.index(shown)
        first = all(a.digit != shown.digit for a in clip.appearances[:n])
        return symbol[(n + 1, shown.digit, first)]
    return caption_of


def _repeat_accuracy(model, symbols: tuple[int, int]) -> float:
    model.eval()
    right = repeat_accuracy(model, symbols)
    model.train()
    return right


def sharpen_attention(model, gain: float) -> None:
    """Scale each query norm's weight by `gain`. With normalised queries and keys an attention logit is at
    most about sqrt(head_dim) * the two norms' weights (5.7 at head_dim 32 with weights of 1), too flat to pick
    one token out of a thousand; a larger gain lets a head attend that sharply from the start."""
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if name.endswith("attn.q_norm.weight"):
                weight.mul_(gain)


def parse_kinds(text: str) -> tuple[tuple[str, float], ...]:
    pairs = [item.split(":") for item in text.split(",")]
    return tuple((kind, float(weight)) for kind, weight in pairs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--no-timeline", action="store_true", help="no timeline questions")
    p.add_argument("--no-time", action="store_true", help="frames without timestamps")
    p.add_argument("--kinds", help="question kinds and weights, e.g. order:3,time:2,timeline:1,count:1,at:1 "
                   "(default: the recipe's)")
    p.add_argument("--seconds", help="clip lengths LO:HI, every step (default: the recipe's, growing over the run)")
    p.add_argument("--all-frames", action="store_true", help="keep repeated frames (the design keeps changes only)")
    p.add_argument("--walk", action="store_true", help="order and time answers walk the appearances first")
    p.add_argument("--captions", action="store_true", help="each frame followed by what it shows, as a target")
    p.add_argument("--stamp-digits", action="store_true", help="each frame's timestamp written a character a token")
    p.add_argument("--fused-captions", action="store_true",
                   help="captions of one token each: appearance number, digit and first showing (see fused_captions)")
    p.add_argument("--caption-joiner", help="what joins a caption's number and digit instead of '=', "
                   "e.g. ' ' (the earlier form)")
    p.add_argument("--cite", action="store_true", help="order and time answers first cite the caption they rest on")
    p.add_argument("--question-first", action="store_true", help="the question before the video instead of after it")
    p.add_argument("--mark", action="store_true", help="the question first, and the caption of the frame that "
                   "answers it marked with the answer (with --captions)")
    p.add_argument("--copy-steps", type=int, default=0,
                   help="first train this many steps on random text repeated (induction), then on video")
    p.add_argument("--qk-gain", type=float, default=1.0,
                   help="multiply every attention's query-norm weight by this before training (sharper attention)")
    p.add_argument("--eval-seconds", default="10,30",
                   help="clip lengths of the closing check (default 10,30; empty: none)")
    p.add_argument("--first-only", action="store_true", help="only 'Which digit appeared first?' on 5-10 s clips")
    args = p.parse_args()
    out = Path(args.out)
    copy_model(Path(args.model), out, CONTEXT)
    model, tokenizer = load(out), load_tokenizer(out)
    if args.qk_gain != 1.0:
        sharpen_attention(model, args.qk_gain)
    recipe = image_recipe("omni-tiny").video
    if args.kinds:
        recipe = dataclasses.replace(recipe, kinds=parse_kinds(args.kinds))
    if args.seconds:
        low, high = (int(v) for v in args.seconds.split(":"))
        recipe = dataclasses.replace(recipe, seconds=(low, high), first_longest=high)
    if args.walk:
        recipe = dataclasses.replace(recipe, walk=True)
    if args.cite:
        recipe = dataclasses.replace(recipe, cite=True)
    if args.question_first:
        recipe = dataclasses.replace(recipe, question_first=True)
    if args.mark:
        recipe = dataclasses.replace(recipe, question_first=True, mark=True)
    if args.no_timeline:
        recipe = dataclasses.replace(recipe, kinds=tuple(k for k in recipe.kinds if k[0] != video_data.TIMELINE))
    codec = load_image_codec(out, tokenizer)
    stamps = StampForm.DIGITS if args.stamp_digits else VideoReading.load(args.model).stamps  # as the model learned
    data, held_out = (VideoData.build(recipe, codec, tokenizer, CONTEXT, with_time=not args.no_time,
                                      all_frames=args.all_frames, captions=args.captions or args.fused_captions,
                                      split=split, stamps=stamps)
                      for split in ("train", "held_out"))
    if args.fused_captions:
        data.caption_of = held_out.caption_of = fused_captions(tokenizer)
    if args.caption_joiner is not None:
        data.caption_of = held_out.caption_of = functools.partial(video_data.caption, joiner=args.caption_joiner)
    model.train()
    optimizer = adamw(model, args.lr)
    rng, started, losses = np.random.default_rng(0), time.perf_counter(), []
    text = (0, tokenizer.layout.text_vocab_size)
    for step in range(args.copy_steps):
        train_step(model, optimizer, *repeat_batch(text, batch_generator(1, step, 0)), args.lr, step, args.copy_steps)
        if (step + 1) % 100 == 0:
            print(f"copy step {step + 1}: repeat predicted {_repeat_accuracy(model, text):.2f}", flush=True)
    if args.copy_steps:
        optimizer = adamw(model, args.lr)
    print(f"repeat of 50 random text tokens predicted {_repeat_accuracy(model, text):.2f}", flush=True)
    for step in range(args.steps):
        if args.first_only:
            ids, targets, _ = pad_rows([first_only(data, rng)[0] for _ in range(FIRST_ONLY_ROWS)],
                                       tokenizer.special_ids["<|pad|>"])
            x, y = ids[:, :-1], targets[:, :-1]
        else:
            x, y = data.batch(batch_generator(0, step, 0), progress=step / args.steps)
        losses.append(train_step(model, optimizer, x, y, args.lr, step, args.steps))
        if (step + 1) % 25 == 0:
            line = f"step {step + 1}: loss {np.mean(losses[-25:]):.3f}, {time.perf_counter() - started:.0f} s"
            if args.first_only:
                line += f", first-digit accuracy {first_only_accuracy(model, data):.2f}"
            print(line, flush=True)
    for seconds in (int(s) for s in args.eval_seconds.split(",") if s):
        for name, digits in (("training", data), ("held-out", held_out)):
            right = answers_right(model, digits, seconds)
            print(f"{seconds} s clips of {name} digits, whole answers right: "
                  + ", ".join(f"{kind} {share:.2f}" for kind, share in right.items()), flush=True)
    model.eval()
    save_weights(model, out)
    # how `hepta eval` and the server must prompt it: the question where it was trained to see it, and
    # the model writing its own captions as it reads where it was trained with them
    VideoReading(question_first=recipe.question_first, captions=data.captions, stamps=data.stamps).save(out)
    print(f"saved {out}; measure it with hepta eval --model {out} --task video-order --json")


if __name__ == "__main__":
    main()
