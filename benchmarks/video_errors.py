"""Where do a captioning model's wrong answers to "When did the 7 first appear?" go wrong? The model
reads each held-out clip of the evaluation as `hepta eval --task video-time` has it read, writing
its own captions, then answers; each wrong answer is put in the first of these that holds:

- no_mark: no caption was marked;
- wrong_frame: the marked frame is not the one where the digit is first seen (misread digits
  land here too);
- mark_time_wrong: the right frame, but the time written into its mark is more than a second off
  the frame's timestamp;
- copy_wrong: the mark is right and the reply says another time.

    .venv/bin/python benchmarks/video_errors.py --model runs/omni [--seconds 60] [--clips 40] [--show]

A wrong frame is then put in one of three by the captions the model wrote and the clip's ground truth:

- misread: the marked frame's own caption names the digit asked about, but the frame shows another (or nothing);
- later: the marked frame shows that digit, but it was seen before (the first appearance read as another);
- against_caption: the model's own caption of the marked frame names another digit.

`--show` also prints each wrong answer: its class, the true time, the marked caption, the caption the model
wrote on the frame that answers, and the reply. The last line splits the clips by how many tokens the model's
text tokenizer gives the true time's seconds ("14" one, "51" two before every two-digit number became a token;
`tokenizer.with_two_digit_numbers`); `--split-by FOLDER` splits them by another model's tokenizer, so that the
same clips compare across runs.

The counts add up to the clips, `right` included; on the runs in docs/multimodal.md the right ones
equal `hepta eval`'s accuracy on the same clips.

`--kind order` asks "Which digit appeared third?" instead (as `hepta eval --task video-order`), and puts each wrong
answer in the first of: no_mark; wrong_appearance (the marked frame is not the asked appearance's first);
misread (the right frame marked, its caption naming another digit than the frame shows); copy_wrong (the mark
right, the reply another digit).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

import torch

from hepta.eval.video_tasks import FPS, VideoEval
from hepta.loading import load, load_image_codec, load_tokenizer
from hepta.modality import video_data
from hepta.modality.chat import video_vocab
from hepta.modality.video_span import parse_clock


def written_captions(ids: list[int], tokenizer, video) -> list[str]:
    """The captions in a prompt the model has written them into: what lies between each frame's image
    end and the end id that closes its caption."""
    ids_T = torch.tensor(ids)
    image_ends = torch.nonzero(ids_T == video.images.end_id).flatten()
    return [tokenizer.decode(ids[int(image_ends[image_ends < end].max()) + 1:end])
            for end in video.caption_ends(ids_T, tokenizer.end_id).tolist()]


def first_marked(times: tuple[float, ...], captions: list[str]) -> tuple[float, str] | None:
    """The time and caption of the first frame whose caption the model marked, None where it marked none."""
    return next(((t, c) for t, c in zip(times, captions) if video_data.MARK in c), None)


def what_went_wrong(q: video_data.VideoQuestion, times: tuple[float, ...], captions: list[str], reply: str,
                    clip: video_data.Clip | None = None) -> str:
    """The class of an answer (the module's docstring); an order question's needs its clip."""
    if video_data.is_right(q, reply):
        return "right"
    marked = first_marked(times, captions)
    if marked is None:
        return "no_mark"
    seen, caption = marked
    if q.kind == "order":
        return order_fault(clip.appearances[q.asked_about], seen, caption)
    if abs(seen - video_data.first_seen(float(q.truth), FPS)) > 1:
        return "wrong_frame"
    # "0m14" ("0m14s" at b3bd797, "0m1,4" with a units anchor): its digits and the "m" read back as a clock
    after_mark = re.sub(r"[^0-9m]", "", caption.split(video_data.MARK)[-1])
    written = parse_clock(after_mark.replace("m", ":"))
    if written is None or abs(written - seen) > 1:
        return "mark_time_wrong"
    return "copy_wrong"


def order_fault(asked: video_data.Appearance, seen: float, caption: str) -> str:
    """Where a wrong order answer whose caption the model marked went wrong: the frame, the digit read there, or the
    reply's copy of it."""
    if abs(seen - video_data.first_seen(asked.start, FPS)) > 1e-6:
        return "wrong_appearance"
    return "misread" if caption_digit(caption) != asked.digit else "copy_wrong"


def caption_digit(caption: str) -> int | None:
    """The digit a frame caption names ("3=7 * 0m14" names 7), None for an empty screen or an unreadable one."""
    named = re.match(r"\s*\d+=(\d)", caption)
    return int(named.group(1)) if named else None


def wrong_frame_kind(q: video_data.VideoQuestion, clip: video_data.Clip, times: tuple[float, ...],
                     captions: list[str]) -> str:
    """Why the marked frame of a wrong_frame answer was marked: misread, later or against_caption."""
    asked = clip.appearances[q.asked_about].digit
    seen, caption = first_marked(times, captions)
    if caption_digit(caption) != asked:
        return "against_caption"
    shown = clip.on_screen(seen)
    return "later" if shown is not None and shown.digit == asked else "misread"


def caption_at(times: tuple[float, ...], captions: list[str], seconds: float) -> str:
    """The caption the model wrote on the frame read at `seconds` (frames that repeat the one before are left out
    of a prompt, so the last one read by then)."""
    read = [c for t, c in zip(times, captions) if t <= seconds + 1e-6]
    return read[-1] if read else ""


def clip_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True)
    p.add_argument("--seconds", type=int, default=60, choices=video_data.CLIP_LENGTHS)
    p.add_argument("--clips", type=int, default=40)


def time_answers(path: str, seconds: int, clips: int, kind: str = "time"):
    """The model in `path`, its tokenizer, video vocabulary and way of reading video, and its answers to the
    time (or `kind`) questions about `clips` held-out clips of `seconds` s, read as `hepta eval --task
    video-time` has them read."""
    model, tokenizer = load(path), load_tokenizer(path)
    model.eval()
    evaluation = VideoEval.open(model, tokenizer, load_image_codec(path, tokenizer), path, clips)
    answered = evaluation.answer(kind, lengths=(seconds,))
    evaluation.close()
    return model, tokenizer, video_vocab(tokenizer, evaluation.codec.vocab.grid), evaluation.reading, answered


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    clip_arguments(p)
    p.add_argument("--show", action="store_true", help="print each wrong answer with its marked caption")
    p.add_argument("--split-by", help="a model folder whose text tokenizer splits the clips in the last line "
                                      "(default: the model's own), to compare the same clips across tokenizers")
    p.add_argument("--kind", choices=("time", "order"), default="time", help="the questions asked (default: time)")
    args = p.parse_args()
    _model, tokenizer, video, _reading, answered = time_answers(args.model, args.seconds, args.clips, args.kind)
    if args.kind == "order":
        order_errors(answered, tokenizer, video, args.seconds, args.show)
        return
    splitter = load_tokenizer(args.split_by) if args.split_by else tokenizer
    counts, frame_kinds = Counter(), Counter()
    by_form = Counter()  # (tokens the true time's seconds take, right) -> clips
    for a in answered:
        captions = written_captions(a.prompt, tokenizer, video)
        kind = what_went_wrong(a.question, a.times, captions, a.reply)
        counts[kind] += 1
        if kind == "wrong_frame":
            frame_kinds[wrong_frame_kind(a.question, a.clip, a.times, captions)] += 1
        by_form[len(splitter.encode(a.question.answer.split(":")[-1])), kind == "right"] += 1
        if args.show and kind != "right":
            _, marked = first_marked(a.times, captions) or (None, "")
            answering = caption_at(a.times, captions, video_data.first_seen(float(a.question.truth), FPS))
            print(f"{kind}: {a.question.question} true {a.question.answer}, marked {marked!r}, "
                  f"written there {answering!r}, reply {a.reply!r}")
    kinds = ("right", "no_mark", "wrong_frame", "mark_time_wrong", "copy_wrong")
    print(f"video-time, {len(answered)} clips of {args.seconds} s: " + ", ".join(f"{k} {counts[k]}" for k in kinds))
    print("wrong frames: " + ", ".join(f"{k} {frame_kinds[k]}" for k in ("misread", "later", "against_caption")))
    # a text tokenizer may spell some seconds ("51") as two tokens, where a mark copies the rest as one
    print("right, by the tokens the true time's seconds take: " + ", ".join(
        f"{n} token{'s' * (n > 1)}: {by_form[n, True]} of {by_form[n, True] + by_form[n, False]}"
        for n in sorted({n for n, _ in by_form})))


def order_errors(answered, tokenizer, video, seconds: int, show: bool) -> None:
    counts = Counter()
    for a in answered:
        captions = written_captions(a.prompt, tokenizer, video)
        kind = what_went_wrong(a.question, a.times, captions, a.reply, a.clip)
        counts[kind] += 1
        if show and kind != "right":
            written = [c for c in captions if caption_digit(c) is not None]
            print(f"{kind}: {a.question.question} true {a.question.answer}, appearances "
                  f"{' '.join(str(ap.digit) for ap in a.clip.appearances)}, captions {' | '.join(written)}, "
                  f"reply {a.reply!r}")
    kinds = ("right", "no_mark", "wrong_appearance", "misread", "copy_wrong")
    print(f"video-order, {len(answered)} clips of {seconds} s: " + ", ".join(f"{k} {counts[k]}" for k in kinds))


if __name__ == "__main__":
    main()
