"""Where do a captioning model's wrong answers to "When did the 7 first appear?" go wrong? The model
reads each held-out clip of the evaluation as `hepta eval --task video-time` has it read, writing
its own captions, then answers; each wrong answer is put in the first of these that holds:

- no_mark: no caption was marked;
- wrong_frame: the marked frame is not the one where the digit is first seen (misread digits
  land here too);
- mark_time_wrong: the right frame, but the time written into its mark is more than a second off
  the frame's timestamp;
- copy_wrong: the mark is right and the reply says another time.

    .venv/bin/python benchmarks/video_errors.py --model runs/omni [--seconds 60] [--clips 40]

The counts add up to the clips, `right` included; the evaluation's own accuracy for the same clips
may differ by a clip or two, because a batch of other prompts beside each one can tip a greedy tie.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections import Counter

import numpy as np
import torch

from hepta.eval.video_tasks import EVAL_SEED, FPS, GREEDY, VideoEval
from hepta.infer.caption_writer import caption_slots, write_captions
from hepta.infer.engine import generate_many
from hepta.infer.request import Request
from hepta.loading import load, load_image_codec, load_tokenizer
from hepta.modality import video_data
from hepta.modality.chat import encode_chat, video_vocab
from hepta.modality.video_span import parse_clock


def written_captions(ids: list[int], tokenizer, video) -> list[str]:
    """The captions in a prompt the model has written them into: what lies between each frame's image
    end and the end id that closes its caption, inside the video span."""
    ids_T = torch.tensor(ids)
    inside = video.video_mask(ids_T)
    ends = torch.nonzero((ids_T == tokenizer.end_id) & inside).flatten().tolist()
    image_ends = torch.nonzero(ids_T == video.images.end_id).flatten().tolist()
    return [tokenizer.decode(ids[max(i for i in image_ends if i < end) + 1:end]) for end in ends]


def what_went_wrong(q: video_data.VideoQuestion, times: tuple[float, ...], captions: list[str], reply: str) -> str:
    if video_data.is_right(q, reply):
        return "right"
    marked = [(t, c) for t, c in zip(times, captions) if video_data.MARK in c]
    if not marked:
        return "no_mark"
    seen, caption = marked[0]
    if abs(seen - video_data.first_seen(float(q.truth), FPS)) > 1:
        return "wrong_frame"
    written = parse_clock(caption.split(video_data.MARK)[-1].strip().removesuffix("s").replace("m", ":"))  # "0m14"
    if written is None or abs(written - seen) > 1:
        return "mark_time_wrong"
    return "copy_wrong"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--seconds", type=int, default=60, choices=video_data.CLIP_LENGTHS)
    p.add_argument("--clips", type=int, default=40)
    args = p.parse_args()
    model, tokenizer = load(args.model), load_tokenizer(args.model)
    model.eval()
    evaluation = VideoEval.open(model, tokenizer, load_image_codec(args.model, tokenizer), args.model, args.clips)
    video = video_vocab(tokenizer, evaluation.codec.vocab.grid)
    rng = np.random.default_rng([EVAL_SEED, args.seconds, 1])  # the evaluation's questions
    asked, prompts, slots = [], [], []
    for clip in evaluation.clips(args.seconds):
        q = video_data.question("time", clip.clip, rng, FPS)
        part = evaluation.codec.video(clip.pixels, clip.times)
        ids, is_caption = encode_chat(video_data.question_turns(
            dataclasses.replace(part, captions=("",) * len(part.times)), [q], answered=False, question_first=True),
            tokenizer, evaluation.codec.vocab)
        asked.append((q, part.times))
        prompts.append(ids)
        slots.append(caption_slots(ids, is_caption, video))
    written = write_captions(evaluation.engine, prompts, slots)
    replies = [choices[0].text for choices in generate_many(
        evaluation.engine, [Request(p, max_tokens=video_data.ANSWER_TOKENS, sampling=GREEDY) for p in written])]
    evaluation.close()
    counts = Counter(what_went_wrong(q, times, written_captions(ids, tokenizer, video), reply)
                     for (q, times), ids, reply in zip(asked, written, replies))
    kinds = ("right", "no_mark", "wrong_frame", "mark_time_wrong", "copy_wrong")
    print(f"video-time, {len(asked)} clips of {args.seconds} s: " + ", ".join(f"{k} {counts[k]}" for k in kinds))


if __name__ == "__main__":
    main()
