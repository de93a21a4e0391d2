"""Where does a model reading with captions want to put the mark? For each held-out clip of the
evaluation, the true captions without any mark are in the prompt, and after each caption the
probability that the model writes the mark next rather than `<|end|>`, teacher-forced.

    .venv/bin/python benchmarks/video_marks.py --model runs/omni [--task video-time] [--seconds 60]
        [--clips 12] [--caption-joiner ' ']

A model that decides from the question marks the answering frame (and, with no mark in the
prompt to say it has marked already, any later frame the rule still holds for: "number >= k" for
order); one that has not learned the rule gives every frame showing a digit about the same
probability. Printed per clip: each frame's caption and mark probability, then the probability on
the answering frame against the highest on frames before it (a greedy reader marks the first frame
above 0.5). `--caption-joiner` writes the captions as a model trained before "3=7" expects them
("3 7" with ' ').
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics

import numpy as np
import torch

from hepta.eval.video_tasks import EVAL_SEED, FPS, TASK_KINDS, VideoEval
from hepta.loading import load, load_image_codec, load_tokenizer
from hepta.modality import video_data
from hepta.modality.chat import encode_chat, video_vocab


def mark_probabilities(model, tokenizer, codec, part, question: video_data.VideoQuestion, mark_id: int) -> np.ndarray:
    """P(mark) after each frame's caption, with the true unmarked captions in the prompt."""
    ids, _ = encode_chat(video_data.question_turns(part, [question], answered=False, question_first=True),
                         tokenizer, codec.vocab)
    ids_T = torch.tensor(ids)
    caption_ends = video_vocab(tokenizer, codec.vocab.grid).caption_ends(ids_T, tokenizer.end_id)  # frame by frame
    assert len(caption_ends) == len(part.times)
    with torch.no_grad():
        logits_TV = model(ids_T[None])[0]
    return torch.softmax(logits_TV[caption_ends - 1].float(), dim=-1)[:, mark_id].numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--task", default="video-time", choices=["video-order", "video-time"])
    p.add_argument("--seconds", type=int, default=60, choices=video_data.CLIP_LENGTHS)
    p.add_argument("--clips", type=int, default=12)
    p.add_argument("--caption-joiner", default="=", help="what joins a caption's number and digit")
    args = p.parse_args()
    model, tokenizer = load(args.model), load_tokenizer(args.model)
    model.eval()
    evaluation = VideoEval.open(model, tokenizer, load_image_codec(args.model, tokenizer), args.model, args.clips)
    mark_id, = tokenizer.encode(video_data.MARK)
    rng = np.random.default_rng([EVAL_SEED, args.seconds, 1])  # the evaluation's questions
    on_answer, before_max, first_above_half = [], [], 0
    for clip in evaluation.clips(args.seconds):
        q = video_data.question(TASK_KINDS[args.task], clip.clip, rng, FPS)
        # stamped as the model was trained to read them (its video_reading.json), as hepta eval stamps them
        part = evaluation.codec.video(clip.pixels, clip.times, stamps=evaluation.reading.stamps)
        captions = tuple(video_data.caption(clip.clip, t, joiner=args.caption_joiner) for t in part.times)
        part = dataclasses.replace(part, captions=captions)
        p_mark = mark_probabilities(model, tokenizer, evaluation.codec, part, q, mark_id)
        answering = part.times.index(video_data.marked_caption(q, clip.clip, FPS)[0])
        on_answer.append(float(p_mark[answering]))
        before_max.append(float(p_mark[:answering].max(initial=0.0)))
        above = np.flatnonzero(p_mark > 0.5)
        first_above_half += int(len(above) > 0 and above[0] == answering)
        print(f"{q.question} " + " ".join(f"{c}:{v:.2f}" for c, v in zip(captions, p_mark) if c != video_data.EMPTY))
    evaluation.close()
    print(f"{args.task}, {len(on_answer)} clips of {args.seconds} s: P(mark) on the answering frame, median "
          f"{statistics.median(on_answer):.2f}; highest before it, median {statistics.median(before_max):.2f}; "
          f"the first frame above 0.5 is the answering one in {first_above_half} of {len(on_answer)}")


if __name__ == "__main__":
    main()
