"""Where a captioning model looks when it copies a time from its mark into the reply. For each held-out
clip whose time question it marked on the right frame with the right time (`video_errors.py`'s classes
right and copy_wrong), the reply is teacher-forced up to the position that predicts the seconds' last token
("0:" before "14"; "0:1" before "4" where every number is a digit a token), and every head's attention from there
is read: the share on the mark's token it copies ("14" of "3=7 * 0m14") and the share on all the frames'
timestamp seconds tokens, averaged per class.

    .venv/bin/python benchmarks/video_copy_attention.py --model runs/omni [--seconds 60] [--clips 40]

It also prints the model's probability of the right seconds token and how many frames follow the marked one,
per class: a copy that works only when few frames follow is a look-up by position, not by the mark.

    .venv/bin/python benchmarks/video_copy_attention.py --model runs/omni --at mark [--seconds 180]

reads the copy before it instead: where the model writes the seconds into the mark ("3=7 * 0m" -> "14"), in each
clip marked on the right frame, from its own prompt (timestamps written a character a token, as the recipe does).
Per clip, the frame's timestamp, what the mark says, and the probability of the right seconds (of all their tokens,
where the text tokenizer spells them as two, as it does every number with digit tokens); per head, from the query
that writes their last token, the share of attention on the marked frame's
timestamp digits and on every other timestamp's, over the clips whose mark is right and those whose mark is wrong.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from hepta.modality import video_data
from hepta.modality.video_span import StampForm

from video_errors import clip_arguments, time_answers, what_went_wrong, written_captions

CLASSES = ("right", "copy_wrong")


def recording_kernel(last_row: dict, layer: int):
    """softmax(QK^T)V as the model's kernel computes it (causal over the keys, GQA), keeping the last query's
    weights [H, S] in last_row[layer]."""
    def kernel(q, k, v, attn_mask=None, is_causal=False, enable_gqa=False):
        assert attn_mask is None and is_causal, "one whole causal forward, no cache"
        repeat = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(repeat, 1), v.repeat_interleave(repeat, 1)
        scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
        T = scores.shape[-1]
        weights = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
        last_row[layer] = weights[0, :, -1]
        return weights @ v
    return kernel


def units_anchor(path: str) -> str:
    """What the run wrote before a marked time's last digit (`hepta train --video-mark-units-anchor`), "" for none."""
    return json.loads((Path(path) / "train_args.json").read_text()).get("video_mark_units_anchor") or ""


def marked_seconds(tokenizer, seconds: str, anchor: str) -> list[int]:
    """The tokens a mark writes for `seconds` ("27"), with `anchor` before their last digit ("2", ",", "7")."""
    return tokenizer.encode(seconds[:-1] + anchor + seconds[-1])


def recorded(path: str, seconds: int, clips: int):
    """`time_answers` with every layer's attention from the last query kept in the returned dict after a forward."""
    model, tokenizer, video, reading, answered = time_answers(path, seconds, clips)
    last_row: dict = {}
    for i, layer in enumerate(model.layers):
        layer.attn.attention_kernel = recording_kernel(last_row, i)
    return model, tokenizer, video, reading, answered, last_row


def print_head_shares(model, shares: dict, kinds, what: str) -> None:
    for kind in kinds:
        if not shares.get((kind, 0)):
            continue
        print(f"\n{kind}: attention (mean over clips), per head: {what}")
        for layer in range(len(model.layers)):
            mean = torch.stack(shares[kind, layer]).mean(0)
            print(f"  layer {layer}: " + "  ".join(f"{m:.2f}/{s:.2f}" for m, s in mean.tolist()))


def stamp_text(ids: list[int], tokenizer, video) -> str:
    """A timestamp's ids as text ("0:14"), its digits read back from time tokens where it is written in them."""
    digits = range(video.time_start, video.time_start + 10)
    return "".join(str(i - video.time_start) if i in digits else tokenizer.decode([i]) for i in ids)


def mark_copy(args) -> None:
    """Where the model looks as it writes the seconds into a mark on the right frame."""
    model, tokenizer, video, _reading, answered, last_row = recorded(args.model, args.seconds, args.clips)
    anchor = units_anchor(args.model)
    mark_id, colon_id = tokenizer.encode(video_data.MARK)[-1], tokenizer.encode(":")[-1]
    shares, probability = defaultdict(list), defaultdict(list)
    for a in answered:
        if what_went_wrong(a.question, a.times, written_captions(a.prompt, tokenizer, video), "") in ("no_mark",
                                                                                                    "wrong_frame"):
            continue
        prompt = torch.tensor(a.prompt)
        inside = video.video_mask(prompt)
        mark = int(torch.nonzero((prompt == mark_id) & inside)[0])
        mark_seconds = mark + 3  # " *", " 0", "m", then the seconds
        colons = torch.nonzero((prompt == colon_id) & inside).flatten()
        own = colons[colons < mark].max()  # the marked frame's timestamp ("2", ":", "5", "1")
        others = colons[(colons != own) & (colons < mark)]
        stamp = stamp_text(a.prompt[int(own) - 1:int(own) + 3], tokenizer, video)
        right = marked_seconds(tokenizer, stamp.split(":")[1], anchor)  # "51", or "5", "1" (or "5", ",", "1")
        written = a.prompt[mark_seconds:mark_seconds + len(right)]
        kind = "mark right" if written == right else "mark wrong"
        # the seconds' tokens teacher-forced: the attention read is the last query's, which writes their last token
        with torch.no_grad():
            logits = model(torch.tensor([a.prompt[:mark_seconds] + right[:-1]]))[0, -len(right):].float()
        probability[kind].append(logits.softmax(-1)[torch.arange(len(right)), right].prod().item())
        print(f"{kind}: stamp {stamp}, mark {tokenizer.decode(a.prompt[mark + 1:mark_seconds + len(right)])!r}, "
              f"p(the stamp's seconds) {probability[kind][-1]:.3f}"
              + (f" ({len(right)} tokens; the attention is the last one's)" if len(right) > 1 else ""))
        for layer, row in last_row.items():
            shares[kind, layer].append(torch.stack([row[:, [int(own) + 1, int(own) + 2]].sum(-1),
                                                    row[:, torch.cat([others + 1, others + 2])].sum(-1)], -1))
    print(f"\nclips of {args.seconds} s marked on the right frame: " + ", ".join(
        f"{kind} {len(p)} (p of the right seconds, median {np.median(p):.3f})" for kind, p in probability.items()))
    print_head_shares(model, shares, ("mark right", "mark wrong"),
                      "on the marked frame's timestamp digits / on the other timestamps' digits")


def reply_copy(args) -> None:
    """Where the model looks as it copies the mark's seconds into the reply."""
    model, tokenizer, video, reading, answered, last_row = recorded(args.model, args.seconds, args.clips)
    anchor = units_anchor(args.model)
    mark_id, colon_id = tokenizer.encode(video_data.MARK)[-1], tokenizer.encode(":")[-1]
    shares = defaultdict(list)  # (class, layer) -> [H, 2] per clip: on the mark's seconds, on the timestamps'
    probability, frames_after = defaultdict(list), defaultdict(list)
    for a in answered:
        captions = written_captions(a.prompt, tokenizer, video)
        if what_went_wrong(a.question, a.times, captions, "") != "copy_wrong":  # the mark itself is wrong
            continue
        kind = "right" if video_data.is_right(a.question, a.reply) else "copy_wrong"
        prompt = torch.tensor(a.prompt)
        inside = video.video_mask(prompt)
        mark_seconds = int(torch.nonzero((prompt == mark_id) & inside)[0]) + 3  # " *", " 0", "m", "14"
        colons = torch.nonzero((prompt == colon_id) & inside).flatten()
        # the seconds of every timestamp: one token, or two where the stamps are written a character a token
        two = reading.stamps != StampForm.TEXT
        stamp_seconds = torch.cat([colons + 1, colons + 2]) if two else colons + 1
        minutes, seconds = a.question.answer.split(":")
        right = tokenizer.encode(seconds)  # one token, or two ("2", "7") with digit tokens: the last one is read
        ids = a.prompt + tokenizer.encode(minutes) + tokenizer.encode(":") + right[:-1]
        with torch.no_grad():
            logits = model(torch.tensor([ids]))[0, -1].float()
        probability[kind].append(logits.softmax(-1)[right[-1]].item())
        frames_after[kind].append(int((colons > mark_seconds).sum()))
        source = mark_seconds + len(marked_seconds(tokenizer, seconds, anchor)) - 1  # the mark's token copied there
        for layer, row in last_row.items():
            shares[kind, layer].append(torch.stack([row[:, source], row[:, stamp_seconds].sum(-1)], -1))
    print(f"video-time, clips of {args.seconds} s marked on the right frame with the right time: "
          + ", ".join(f"{kind} {len(probability[kind])}" for kind in CLASSES))
    for kind in CLASSES:
        if not probability[kind]:
            continue
        print(f"\n{kind}: p(the right seconds, their last token) median {np.median(probability[kind]):.3f}; "
              f"frames after the mark "
              f"{sorted(frames_after[kind])}")
    print_head_shares(model, shares, CLASSES,
                      "from where the reply writes the seconds' last token, on the mark's token it copies / "
                      "on the timestamps' seconds")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    clip_arguments(p)
    p.add_argument("--at", choices=("reply", "mark"), default="reply",
                   help="the copy read: the mark's time into the reply, or the frame's timestamp into the mark")
    args = p.parse_args()
    if args.at == "mark":
        mark_copy(args)
    else:
        reply_copy(args)


if __name__ == "__main__":
    main()
