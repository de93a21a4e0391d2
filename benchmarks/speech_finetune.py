"""A quick probe of the speech training design: fine-tune a trained omni model on one speech task.

    .venv/bin/python benchmarks/speech_finetune.py --model runs/omni --out runs/speech-probe [--task transcribe]
        [--steps 600] [--lr 1e-3] [--utterances 4000] [--rows 64] [--eval-every 100] [--eval-n 60] [--word-share S]
    hepta eval --model runs/speech-probe --task asr --json

It copies the model folder to --out, trains it for --steps with AdamW and a cosine schedule on one
task, and saves the weights. `--task transcribe`: "Transcribe this audio." over --utterances
training sentences said by the training voices (varied and noisy as in the recipe,
`modality/speech_data.py`); every --eval-every steps it prints the word error rate of greedy
transcripts of --eval-n held-out sentences said by held-out voices (the `asr` task's utterances)
and of as many of its own training utterances: the gap between the two says whether more data or
more fitting is what is missing; `--word-share S` makes that share of the training texts random
sequences of the domain's words (`speech_domain.word_sequence`). `--task say`: "Say: ..." over
--utterances distinct training sentences in the house voice; it prints the judge's word error rate
on hepta's speech of --eval-n held-out sentences (the `tts` task's) and of as many training
sentences. Minutes instead of the hour of the whole recipe.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from hepta.checkpoint import save_weights
from hepta.eval.recogniser import domain_recogniser, word_error_rate
from hepta.eval.speech_eval import EVAL_SEED, SpeechEval
from hepta.loading import load, load_audio_codec, load_tokenizer
from hepta.modality import speech_data, speech_tasks
from hepta.modality.chat import encode_chat
from hepta.train.conversations import pad_rows

from _finetune import adamw, copy_model, train_step

EVAL_TASK = {"transcribe": "asr", "say": "tts"}


def error_rate(model, tokenizer, codec, folder: Path, utterances, task: str) -> float:
    """Transcribe: hepta's transcripts of the utterances; say: the judge's of hepta's speech of their texts."""
    model.eval()
    speech = SpeechEval.open(model, tokenizer, codec, str(folder), len(utterances))
    try:
        if task == "transcribe":
            heard = speech.transcripts([u.wave for u in utterances])
        else:
            judge = domain_recogniser()
            heard = [judge.transcribe(wave) for wave in speech.speech([u.text for u in utterances])]
    finally:
        speech.close()
        model.train()
    return word_error_rate([u.text for u in utterances], heard)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--task", choices=("transcribe", "say"), default="transcribe")
    p.add_argument("--utterances", type=int, default=4000, help="training utterances")
    p.add_argument("--rows", type=int, default=64, help="conversations a step")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-n", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--word-share", type=float, default=0.0,
                   help="share of the training texts that are random word sequences instead of template sentences")
    args = p.parse_args()
    out = Path(args.out)
    copy_model(Path(args.model), out)
    model, tokenizer = load(out), load_tokenizer(out)
    codec = load_audio_codec(out, tokenizer)
    started = time.perf_counter()
    if args.task == "transcribe":
        train = speech_data.varied_utterances("train", args.utterances, seed=args.seed,
                                                   word_share=args.word_share)
        held_out = speech_data.varied_utterances("held_out", args.eval_n, seed=EVAL_SEED)
        turns = speech_tasks.transcribe_turns
    else:
        train = speech_data.house_utterances("train", args.utterances, seed=args.seed)
        held_out = speech_data.house_utterances("held_out", args.eval_n, seed=EVAL_SEED)
        turns = lambda codes, text: speech_tasks.say_turns(text, codes)  # noqa: E731
    codes = codec.codes_of_many([u.wave for u in train])
    rows = [encode_chat(turns(c, u.text), tokenizer, None, add_generation_prompt=False, audio=codec.vocab)
            for c, u in zip(codes, train)]
    print(f"{len(train):,} training utterances said and encoded in {time.perf_counter() - started:.0f} s", flush=True)

    def report(step: int) -> None:
        rates = [error_rate(model, tokenizer, codec, out, u, args.task) for u in (held_out, train[:args.eval_n])]
        print(f"step {step}: held-out WER {rates[0]:.3f}, training WER {rates[1]:.3f}", flush=True)

    report(0)
    model.train()
    optimizer = adamw(model, args.lr)
    rng, started, losses = np.random.default_rng(args.seed), time.perf_counter(), []
    pad = tokenizer.special_ids["<|pad|>"]
    for step in range(args.steps):
        ids, targets, _ = pad_rows([rows[i] for i in rng.integers(0, len(rows), args.rows)], pad)
        losses.append(train_step(model, optimizer, ids[:, :-1], targets[:, :-1], args.lr, step, args.steps))
        if (step + 1) % 25 == 0:
            print(f"step {step + 1}: loss {np.mean(losses[-25:]):.3f}, {time.perf_counter() - started:.0f} s", flush=True)
        if (step + 1) % args.eval_every == 0:
            report(step + 1)
    model.eval()
    save_weights(model, out)
    print(f"saved {out}; measure it with hepta eval --model {out} --task {EVAL_TASK[args.task]} --json")


if __name__ == "__main__":
    main()
