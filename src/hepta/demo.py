"""`hepta demo` (what `make demo` runs): train `omni-tiny` briefly on the embedded text corpus, the
digits conversations, eSpeak NG speech and clips of digits, show that it learned, let it write,
serve it to the `openai` client (text, live grounding, images: recognise, draw, edit; speech: say,
transcribe; video: questions about when things happen), and show the presets up to grok5-7t."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rich.console import Console

from hepta.checkpoint import load_hepta_folder
from hepta.demo_speech import speech_demo
from hepta.demo_video import video_demo
from hepta.errors import HeptaError
from hepta.infer.complete import stream_completion
from hepta.infer.sampling import SamplingParams
from hepta.param_table import print_preset_table
from hepta.tokenizer import Tokenizer
from hepta.train.loop import TrainArgs, Trainer, load_args
from hepta.train.report import read_metrics
from hepta.train.state import checkpoint_step, latest_checkpoint

# Sized to finish in about 8 minutes on 2 CPU cores, the three tokenizers' training included: a
# short version of the omni-tiny recipe (`hepta train --preset omni-tiny` runs the full one).
DEMO_STEPS = 320
DEMO_PROMPT = "def read_config(path):\n    "


def demo_args(out: Path) -> TrainArgs:
    return TrainArgs(out=str(out), preset="omni-tiny", max_corpus_mb=12, steps=DEMO_STEPS, batch_size=8,
                     seq_len=256, chat_batch_size=32, image_tokenizer_steps=400, audio_tokenizer_steps=300,
                     speech_utterances=800, save_every=80, eval_every=80, eval_batches=8)


def run_demo(out: Path, quiet: bool = False) -> None:
    console = Console()
    console.rule("[bold]hepta demo")
    args = demo_args(out)
    checkpoint = latest_checkpoint(out)
    if checkpoint is not None and dataclasses.asdict(load_args(out)) != dataclasses.asdict(args):
        raise HeptaError(f"{out} holds a different training run; remove it or run `hepta demo --out OTHER_DIR`")
    done = checkpoint is not None and checkpoint_step(checkpoint) >= args.steps
    if done:
        console.print(f"reusing the finished run in {out}")
    else:
        console.print(f"training [bold]omni-tiny[/] for {args.steps} steps on the Python standard library's source "
                      f"conversations about scikit-learn's digits and eSpeak NG speech ({'resuming' if checkpoint else 'new run'} "
                      f"in {out})")
        Trainer(args, resume=checkpoint is not None, log=console.print).run(quiet=quiet)

    evals = [r for r in read_metrics(out) if r["kind"] == "eval"]
    console.print(f"validation loss: [bold]{evals[0]['val_loss']:.3f}[/] before training -> "
                  f"[bold green]{evals[-1]['val_loss']:.3f}[/] after {evals[-1]['step']} steps "
                  f"(nats/token; uniform guessing is {_uniform_loss(out):.2f})")
    console.print(f"metrics: {out / 'metrics.jsonl'}, curves and expert load: {out / 'training.png'}, "
                  f"experts by modality: {out / 'expert_modality.png'}")

    console.rule("generation (temperature 0.7, seed 0)")
    model, tokenizer = load_hepta_folder(out), Tokenizer.load(out)
    console.print(DEMO_PROMPT, end="", style="bold", markup=False, highlight=False)
    for delta in stream_completion(model, tokenizer, DEMO_PROMPT, max_tokens=80,
                                   sampling=SamplingParams(temperature=0.7, top_p=0.95, seed=0)):
        console.print(delta, end="", markup=False, highlight=False)
    console.print()
    posts_db = _live_demo(console, out)
    _serve_demo(console, out, model, tokenizer, posts_db)
    console.rule("presets")
    print_preset_table(console)


LIVE_QUESTION = "What are people saying about the rocket launch today?"


def _live_demo(console: Console, out: Path) -> Path:
    """Ingest the bundled post stream (no keys, no network) and ask the store what people think."""
    from hepta.live.ingest import Ingest
    from hepta.live.opinion import opinion
    from hepta.live.sources.replay import JsonlReplay
    from hepta.live.store import Store
    from hepta.live.synth import SAMPLE_STREAM

    console.rule("live knowledge: the bundled X post stream")
    posts_db = out / "posts.db"
    with Store(posts_db) as store:
        stats = Ingest(store, JsonlReplay(SAMPLE_STREAM)).run()
        report = opinion(store, "rocket launch")
    console.print(f"ingested {stats.received:,} posts into {posts_db} ({stats.posts_per_s:,.0f} posts/s; "
                  "duplicates and older edits stored once)")
    shares = ", ".join(f"{label} {share:.0%}" for label, share in report.shares.items())
    console.print(f"opinion on 'rocket launch': {report.num_posts} posts, {shares}")
    return posts_db


def _serve_demo(console: Console, out: Path, model, tokenizer, posts_db: Path) -> None:
    """Serve the model in-process and call it with the `openai` client, as any application would."""
    import openai

    from hepta.serve.app import ServeConfig, create_app
    from hepta.serve.runner import BackgroundServer

    app = create_app(ServeConfig(model=str(out), model_name="hepta-tiny", live_db=str(posts_db)),
                     loader=lambda: (model, tokenizer))
    with BackgroundServer(app) as server:
        server.wait_ready()
        console.rule(f"OpenAI-compatible API at {server.url}/v1")
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="not-needed-on-localhost")
        messages = [{"role": "user", "content": "Write a Python function that reads a config file."}]
        answer = client.chat.completions.create(model="hepta-tiny", messages=messages, max_tokens=48,
                                                temperature=0.7, seed=0)
        console.print("[bold]client.chat.completions.create(...)[/]")
        console.print(_message_text(answer.choices[0].message), markup=False, highlight=False)
        console.print(f"[dim]finish_reason={answer.choices[0].finish_reason} usage: {answer.usage.prompt_tokens} "
                      f"prompt + {answer.usage.completion_tokens} completion tokens[/]")
        console.print("[bold]client.chat.completions.create(..., stream=True)[/]")
        stream = client.chat.completions.create(model="hepta-tiny", messages=messages, max_tokens=48,
                                                temperature=0.7, seed=1, stream=True,
                                                stream_options={"include_usage": True})
        chunks = 0
        for chunk in stream:
            delta = chunk.choices[0].delta if chunk.choices else None
            if delta is not None and (delta.content or (delta.model_extra or {}).get("images")):
                chunks += 1
                console.print(_message_text(delta), end="", markup=False, highlight=False)
        console.print(f"\n[dim]{chunks} streamed chunks[/]")
        console.print(f"[bold]grounded in live posts (xAI search_parameters):[/] {LIVE_QUESTION}")
        grounded = client.chat.completions.create(
            model="hepta-tiny", messages=[{"role": "user", "content": LIVE_QUESTION}], max_tokens=24, seed=0,
            extra_body={"search_parameters": {"mode": "auto", "max_search_results": 3}})
        console.print(grounded.choices[0].message.content, markup=False, highlight=False)
        for url in grounded.model_extra.get("citations", []):
            console.print(f"  cited: {url}", markup=False, highlight=False)
        _images_demo(console, client, out)
        speech_demo(console, client, "hepta-tiny", out)
        video_demo(console, client, "hepta-tiny")


def _message_text(message) -> str:
    """The text of a message or delta; an image answer (OpenRouter's `images` field) is named, since a
    model trained on digit conversations may answer a chat turn with a drawing."""
    images = (message.model_extra or {}).get("images") or []
    marks = "".join("[an image, in .images]" for _ in images)
    return (message.content or "") + marks


def _images_demo(console: Console, client, out: Path) -> None:
    """Recognise a held-out digit, draw one of each digit, and edit one, all through the openai client."""
    import base64

    from hepta.demo_images import digit_grid_png, held_out_digit_png

    console.rule("images through the same API (held-out digits: never seen in training)")
    png, label = held_out_digit_png(0)
    url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    answer = client.chat.completions.create(model="hepta-tiny", max_tokens=3, temperature=0, messages=[
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                     {"type": "text", "text": "What digit is this?"}]}])
    console.print(f"[bold]chat with an image_url part[/], a held-out {label}: "
                  f"What digit is this? -> {answer.choices[0].message.content!r}")
    drawn = [base64.b64decode(client.images.generate(model="hepta-tiny", prompt=f"Draw the digit {d}.",
                                                     extra_body={"seed": d}).data[0].b64_json) for d in range(10)]
    grid = out / "drawn_digits.png"
    grid.write_bytes(digit_grid_png(drawn))
    console.print(f"[bold]client.images.generate[/](prompt='Draw the digit 0.' ... '9.'): {grid}")
    edited = client.images.edit(model="hepta-tiny", image=("digit.png", png, "image/png"),
                                prompt="Flip this image horizontally.")
    edit_file = out / "edited_digit.png"
    edit_file.write_bytes(digit_grid_png([png, base64.b64decode(edited.data[0].b64_json)]))
    console.print(f"[bold]client.images.edit[/](prompt='Flip this image horizontally.'): before and after in {edit_file}")


def _uniform_loss(out: Path) -> float:
    import math

    from hepta.checkpoint import read_config

    return math.log(read_config(out).vocab_size)
