"""`hepta eval --model DIR --task TASK [--json]`."""

from __future__ import annotations

import argparse
import json
import time

TASKS = ("image-recognition", "image-generation", "image-editing", "asr", "tts", "asr-real", "audio-tokenizer",
         "video-order", "video-time", "video-count", "text")
SPEECH_TASKS = ("asr", "tts", "asr-real", "audio-tokenizer")
VIDEO_TASKS = ("video-order", "video-time", "video-count")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="measure a model: held-out digits (recognise, draw, edit), held-out "
                       "speech (transcribe, say), real recordings, questions about video clips, or text loss")
    p.add_argument("--model", required=True, help="model folder")
    p.add_argument("--task", required=True, help=f"one of: {', '.join(TASKS)}")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--limit", type=int, help="only the first N held-out digits, N held-out utterances for asr "
                   "and tts (default 200), or N clips per length for the video tasks (default 40)")
    p.add_argument("--no-time", action="store_true", help="video tasks: leave the frames' timestamps out of the "
                   "prompt, to measure what time contributes")
    p.add_argument("--temperature", type=float, default=0.7, help="image-generation sampling (default 0.7)")
    p.add_argument("--top-p", type=float, default=0.95, help="image-generation nucleus (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="image-generation: drawing i is seeded SEED + i")
    p.add_argument("--baseline", help="text: a text-only run to compare with (adds baseline_loss and ratio)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> None:
    from hepta.errors import HeptaError

    if args.task not in TASKS:
        raise HeptaError(f"unknown task {args.task!r}; choose one of: {', '.join(TASKS)}")
    if args.limit is not None and args.limit <= 0:
        raise HeptaError(f"--limit must be positive, got {args.limit}")
    started = time.perf_counter()
    if args.no_time and args.task not in VIDEO_TASKS:
        raise HeptaError(f"--no-time applies to the video tasks ({', '.join(VIDEO_TASKS)}), not {args.task}")
    run = (_text if args.task == "text" else _speech if args.task in SPEECH_TASKS
           else _video if args.task in VIDEO_TASKS else _image)
    result = {"task": args.task, **run(args)}
    result["seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(result))
        return
    _print_table(result)


def _image(args: argparse.Namespace) -> dict:
    from hepta.eval.image_tasks import ImageEval
    from hepta.eval.judge import digit_judge
    from hepta.loading import load, load_image_codec, load_tokenizer
    from hepta.progress import CountProgress

    model, tokenizer = load(args.model), load_tokenizer(args.model)
    evaluation = ImageEval.open(model, tokenizer, load_image_codec(args.model, tokenizer), args.model, args.limit)
    total = len(evaluation.held_out.labels) * (3 if args.task == "image-editing" else 1)
    try:
        with CountProgress(args.task, total, quiet=args.quiet) as progress:
            evaluation.on_answer = progress.advance
            if args.task == "image-recognition":
                result = evaluation.recognition()
            elif args.task == "image-generation":
                result = evaluation.generation(args.temperature, args.top_p, args.seed)
            else:
                result = evaluation.editing()
    finally:
        evaluation.close()
    return {**result, "judge_accuracy_on_originals": round(digit_judge().accuracy_on_originals, 4)}


def _speech(args: argparse.Namespace) -> dict:
    from hepta.eval.speech_eval import DEFAULT_UTTERANCES, SpeechEval, audio_tokenizer_quality
    from hepta.loading import load, load_audio_codec, load_tokenizer
    from hepta.progress import CountProgress

    model, tokenizer = load(args.model), load_tokenizer(args.model)
    codec = load_audio_codec(args.model, tokenizer)
    if args.task == "audio-tokenizer" and codec is not None:
        return audio_tokenizer_quality(codec, args.limit or DEFAULT_UTTERANCES)
    evaluation = SpeechEval.open(model, tokenizer, codec, args.model, args.limit)
    try:
        if args.task == "asr-real":
            return evaluation.asr_real()
        with CountProgress(args.task, evaluation.limit, quiet=args.quiet) as progress:
            evaluation.on_answer = progress.advance
            return evaluation.asr() if args.task == "asr" else evaluation.tts()
    finally:
        evaluation.close()


def _video(args: argparse.Namespace) -> dict:
    from hepta.eval.video_tasks import VideoEval
    from hepta.loading import load, load_image_codec, load_tokenizer
    from hepta.modality.video_data import CLIP_LENGTHS
    from hepta.progress import CountProgress

    model, tokenizer = load(args.model), load_tokenizer(args.model)
    evaluation = VideoEval.open(model, tokenizer, load_image_codec(args.model, tokenizer), args.model, args.limit)
    try:
        with CountProgress(args.task, evaluation.clips_per_length * len(CLIP_LENGTHS), quiet=args.quiet) as progress:
            evaluation.on_answer = progress.advance
            return evaluation.task(args.task, with_time=not args.no_time)
    finally:
        evaluation.close()


def _text(args: argparse.Namespace) -> dict:
    from pathlib import Path

    from hepta.errors import HeptaError
    from hepta.eval.text_task import TEXT_EVAL_BATCHES, TEXT_EVAL_BATCH_SIZE, text_documents, text_loss
    from hepta.loading import load, load_tokenizer

    docs = text_documents(Path(args.model))
    tokenizer = load_tokenizer(args.model)
    loss = text_loss(load(args.model), tokenizer, docs)
    result = {"n": TEXT_EVAL_BATCHES * TEXT_EVAL_BATCH_SIZE, "loss": loss}  # n: windows of 256 tokens
    if args.baseline:
        base_tokenizer = load_tokenizer(args.baseline)
        if base_tokenizer.encode(docs.val[0][:20000]) != tokenizer.encode(docs.val[0][:20000]):
            raise HeptaError(f"{args.baseline} splits text into other tokens than {args.model}, so losses per token do "
                             "not compare; train the baseline on the same corpus and vocabulary size")
        baseline = text_loss(load(args.baseline), base_tokenizer, docs)
        result.update(baseline_loss=baseline, ratio=loss / baseline)
    return result


def _print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"hepta eval: {result['task']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if key == "task":
            continue
        if isinstance(value, dict):
            for name, scores in value.items():
                table.add_row(f"{name}", ", ".join(f"{k} {_cell(v)}" for k, v in scores.items() if k != "examples"))
        elif isinstance(value, list):
            for item in value:
                table.add_row(key, str(item) if not isinstance(item, dict) else " | ".join(map(str, item.values())))
        else:
            table.add_row(key, _cell(value))
    Console().print(table)


def _cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
