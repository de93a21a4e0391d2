"""hepta command line: info, train, generate, demo, convert; serve, live and plan come from their layers."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from hepta.devices import add_device_arguments
from hepta.errors import HeptaError
from hepta.modality.stamp_form import StampForm


def _parse_override(item: str) -> tuple[str, object]:
    if "=" not in item:
        raise HeptaError(f"--set {item!r} is not KEY=VALUE; write for example --set moe.num_experts=16")
    key, raw = item.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # bare strings such as router.scoring=sigmoid
    return key.strip(), value


# --- info ----------------------------------------------------------------------------------


def cmd_info(args: argparse.Namespace) -> None:
    from hepta.config import count_params, get_preset
    from hepta.param_table import param_summary, print_param_table

    cfg = get_preset(args.preset)
    if args.json:
        print(json.dumps(param_summary(args.preset, cfg)))
        return
    print_param_table(args.preset, cfg, count_params(cfg))


# --- train ---------------------------------------------------------------------------------

TRAIN_FLAGS = ("preset", "data", "max_corpus_mb", "steps", "batch_size", "seq_len", "grad_accum", "lr",
               "warmup", "weight_decay", "clip", "seed", "save_every", "eval_every", "eval_batches", "ep", "dp_shard",
               "chat_batch_size", "chat_length_groups", "repeat_rows", "repeat_symbols", "image_tokenizer",
               "image_tokenizer_steps", "audio_tokenizer", "audio_tokenizer_steps", "speech_utterances",
               "video_loss_weight", "video_mark_weight", "video_long_finish", "video_shifted_clocks",
               "video_mark_units_anchor", "video_stamps", "device")
# How the run is spread over processes, not what it trains: a resumed run may change these.
TRAIN_LAYOUT_FLAGS = ("ep", "dp_shard", "activation_checkpointing", "device")
# The switches of `hepta train`: the TrainArgs field each sets, and to what.
TRAIN_SWITCHES = {"bf16": ("--bf16", True), "text_only": ("--text-only", True), "augment": ("--no-augment", False),
                  "structured_code_init": ("--random-code-init", False),
                  "video_timestamps": ("--no-video-timestamps", False),
                  "video_captions": ("--no-video-captions", False),
                  "video_stamp_digits": ("--no-video-stamp-digits", False),
                  "video_frame_views": ("--no-video-frame-views", False),
                  "digit_tokens": ("--digit-tokens", True),
                  "video_time_tokens": ("--video-time-tokens", True),
                  "video_tens_tokens": ("--video-tens-tokens", True),
                  "video_mark_weight_moves": ("--video-mark-weight-moves", True),
                  "speed_perturbation": ("--speed-perturbation", True),
                  "packed_conversations": ("--padded-conversations", False),
                  "activation_checkpointing": ("--activation-checkpointing", True)}


def resume_changes(given: dict, overrides: dict, saved) -> list[str]:
    """The flags of a --resume command that differ from the saved run (`saved`: its TrainArgs).

    The same command with --resume appended is the natural way to continue; only --steps and the
    process layout may differ. --set values are compared by field, so a run saved with the flat
    names of earlier versions (`num_experts=16`) resumes with the dotted ones (`moe.num_experts=16`).
    """
    from hepta.config.flat_v1 import FLAT_TO_DOTTED

    changed = [TRAIN_SWITCHES[k][0] if k in TRAIN_SWITCHES else f"--{k.replace('_', '-')}" for k in sorted(given)
               if k != "steps" and k not in TRAIN_LAYOUT_FLAGS and given[k] != getattr(saved, k)]

    def by_field(changes: dict) -> dict:
        return {FLAT_TO_DOTTED.get(key, key): value for key, value in changes.items()}

    if overrides and by_field(overrides) != by_field(saved.overrides):
        changed.append("--set")
    return changed


def cmd_train(args: argparse.Namespace) -> None:
    from hepta.train.loop import TrainArgs, Trainer, load_args
    from hepta.train.recipes import recipe_defaults

    given = {name: getattr(args, name) for name in TRAIN_FLAGS if getattr(args, name) is not None}
    given.update({field: value for field, (flag, value) in TRAIN_SWITCHES.items()
                  if getattr(args, flag[2:].replace("-", "_"))})
    overrides = dict(_parse_override(item) for item in args.set or [])
    if args.resume:
        saved = load_args(Path(args.out))
        changed = resume_changes(given, overrides, saved)
        if changed:
            raise HeptaError(f"--resume continues the saved run as it was; drop or restore {', '.join(changed)} "
                             "(only --steps and the process layout may change)")
        layout = {k: given.get(k, TrainArgs.__dataclass_fields__[k].default) for k in TRAIN_LAYOUT_FLAGS}
        train_args = TrainArgs(**{**saved.__dict__, **given, **layout})
    else:
        # a preset with a recipe (omni-tiny) runs it with no other flag; given flags override it
        train_args = TrainArgs(out=args.out, overrides=overrides, **{**recipe_defaults(args.preset), **given})
    if "RANK" not in os.environ:  # one process: a device that is not there is told before anything is written
        from hepta.devices import resolve_device

        resolve_device(train_args.device)
    started = time.monotonic()  # the whole command: tokenizers and data preparation count too
    try:
        trainer = Trainer(train_args, resume=args.resume, log=(lambda _msg: None) if args.quiet else _log)
    except HeptaError:
        if int(os.environ.get("RANK", "0")) != 0:  # under torchrun every rank finds the problem; rank 0 tells it
            raise SystemExit(1)
        raise
    result = trainer.run(quiet=args.quiet)
    if not trainer.is_main:  # under torchrun, rank 0 speaks for the run
        return
    minutes, seconds = divmod(round(time.monotonic() - started), 60)
    print(f"validation loss {result.val_loss_before:.3f} -> {result.val_loss_after:.3f} after {result.steps} steps "
          f"({minutes} min {seconds} s); model in {result.out}")


def _log(message: str) -> None:
    print(message, file=sys.stderr)


# --- generate ------------------------------------------------------------------------------


def cmd_generate(args: argparse.Namespace) -> None:
    from contextlib import closing

    from hepta.infer.collect import Choice
    from hepta.infer.complete import stream_completion, stream_ids
    from hepta.infer.sampling import SamplingParams
    from hepta.devices import resolve_device, resolve_dtype
    from hepta.interop.hub import model_folder
    from hepta.loading import load, load_tokenizer

    args.model = str(model_folder(args.model, args.revision))
    model = load(args.model, device=resolve_device(args.device), allow_pickle=args.allow_pickle,
                 dtype=resolve_dtype(args.dtype))
    tokenizer = load_tokenizer(args.model)
    sampling = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    result = Choice()
    chat = bool(args.image or args.image_out)
    if chat:  # a chat turn with images and/or an image asked for
        codec, prompt_ids = _image_chat(args, tokenizer)
        deltas = stream_ids(model, tokenizer, prompt_ids, args.max_tokens, sampling, stop=args.stop or (),
                            result=result, images=codec.vocab)
    else:  # the prompt continued as it stands
        deltas = stream_completion(model, tokenizer, args.prompt, args.max_tokens, sampling, stop=args.stop or (),
                                   result=result)  # checks the request first
        sys.stdout.write(args.prompt)
    with closing(deltas):  # Ctrl-C or a closed pipe while printing still cancels and stops the engine
        for delta in deltas:
            sys.stdout.write(delta)
            sys.stdout.flush()
    sys.stdout.write("\n")
    print(f"[{len(result.token_ids)} tokens, finish: {result.finish_reason}]", file=sys.stderr)
    if args.image_out:
        from hepta.infer.image_prompt import first_image_png

        png = first_image_png(codec, prompt_ids, result.token_ids)
        if png is None:
            raise HeptaError(f"the answer holds no complete image, so {args.image_out} was not written; raise "
                             "--max-tokens or ask for an image in --prompt")
        Path(args.image_out).write_bytes(png)
        print(f"[image written to {args.image_out}]", file=sys.stderr)


def _image_chat(args: argparse.Namespace, tokenizer):
    """The model's image codec and the chat prompt ids of --image files and --prompt."""
    from hepta.infer.image_prompt import image_chat_ids
    from hepta.loading import load_image_codec

    codec = load_image_codec(args.model, tokenizer)
    if codec is None:
        raise HeptaError(f"{args.model} reads and writes text only (no image_tokenizer/ folder), so --image and "
                         "--image-out do not apply; drop them or use a model trained with images")
    draw = bool(args.image_out)  # an image answer asked for (a drawing or an edit): open it
    if draw and args.max_tokens < codec.vocab.span_length - 1:
        raise HeptaError(f"--max-tokens {args.max_tokens} is fewer than the {codec.vocab.span_length - 1} tokens of "
                         "one image; raise it")
    return codec, image_chat_ids(codec, tokenizer, args.image or (), args.prompt, draw)


# --- demo ----------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> None:
    from hepta.demo import run_demo

    run_demo(Path(args.out), quiet=args.quiet)


# --- convert -------------------------------------------------------------------------------

# Files beside the weights that travel unchanged in either direction.
CONVERT_COPY_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                      "vocab.json", "merges.txt", "chat_template.jinja", "generation_config.json")


def cmd_convert(args: argparse.Namespace) -> None:
    """Hugging Face folder -> hepta folder, or hepta folder -> Hugging Face folder (by the source's model_type)."""
    import secrets
    import shutil

    from hepta import checkpoint
    from hepta.interop.hf_save import TARGET_TYPES
    from hepta.interop.hf_save import save_hf
    from hepta.interop.hub import model_folder

    dst = Path(args.target)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):  # before anything is downloaded
        raise HeptaError(f"--to {dst} exists and is not empty; choose a new or empty folder")
    src = model_folder(args.source, args.revision, flag="--from")
    config = src / "config.json"
    if not config.is_file():
        raise HeptaError(f"--from {src} is not a model folder (no config.json); pass a hepta or Hugging Face model folder")
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type", "hepta")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise HeptaError(f"{config} is not a valid JSON object ({e}); restore it") from e
    if model_type != "hepta" and args.to_type:
        raise HeptaError(f"--to-type applies to hepta sources only; a {model_type!r} folder converts to hepta, drop it")
    if args.to_type and args.to_type not in TARGET_TYPES:
        raise HeptaError(f"--to-type {args.to_type!r} is not a type hepta writes; choose one of {', '.join(TARGET_TYPES)}")

    from hepta.loading import load

    model = load(src, allow_pickle=args.allow_pickle)  # a hepta folder, or a supported HF folder (it names the supported types otherwise)
    tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(4)}.tmp")  # the whole folder appears at once
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        if model_type == "hepta":
            save_hf(model, tmp, model_type=args.to_type)
            out_type = args.to_type or json.loads((tmp / "config.json").read_text(encoding="utf-8"))["model_type"]
            if (src / "tokenizer.json").is_file() and not (src / "tokenizer_config.json").is_file():
                # hepta's own tokenizer: say what ends a text, what pads and how a chat is written, for
                # transformers and the servers that read the folder
                from hepta.interop.hf_tokenizer_export import write_tokenizer_files
                from hepta.tokenizer import Tokenizer

                write_tokenizer_files(Tokenizer.load(src), tmp, model.config.max_seq_len)
        else:
            checkpoint.save_model(model, tmp)
            out_type = "hepta"
        for name in CONVERT_COPY_FILES:
            if (src / name).is_file():
                shutil.copyfile(src / name, tmp / name)
        os.replace(tmp, dst)  # onto a missing or empty folder
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"converted {src} ({model_type}) -> {dst} ({out_type})")
    left_out = {"qwen3_vl_moe": "vision tower", "qwen3_omni_moe": "audio and vision towers and talker",
                "qwen3_omni_moe_thinker": "audio and vision towers", "qwen3_5_moe": "vision tower"}.get(model_type)
    if left_out:
        print(f"note: the hepta folder holds the language model only; the {left_out} stayed behind, so serve {src} "
              "itself for images, video or audio")


# --- parser --------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from hepta.config import preset_names
    # Command groups kept beside the layer they drive; each module has `add_commands(subparsers)`
    # and imports its heavy dependencies inside the handlers, so `hepta live` never loads torch.
    from hepta.eval import cli as eval_cli
    from hepta.live import cli as live_cli
    from hepta.serve import cli as serve_cli
    from hepta.train import cli as train_cli
    from hepta.train import tokenizer_cli

    parser = argparse.ArgumentParser(prog="hepta", description="Sparse Mixture-of-Experts language models.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="parameter counts of a preset")
    p.add_argument("preset", help=f"one of: {', '.join(preset_names())}")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("train", help="train a model; writes a loadable model folder")
    p.add_argument("--out", default="runs/tiny", help="output folder (default: runs/tiny)")
    p.add_argument("--preset", help="model preset (default: tiny)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="change a ModelConfig field, e.g. num_layers=2 or moe.num_experts=16 "
                        "(the flat names of earlier versions, such as num_experts=16, still work)")
    p.add_argument("--data", help="folder of text files or JSONL with a 'text' field (default: Python's stdlib source); "
                   "with --preset omni-tiny also a chat JSONL of OpenAI-shaped messages with image_url parts "
                   "(default: scikit-learn's digits)")
    p.add_argument("--max-corpus-mb", type=float, help="use at most this much of the default corpus")
    p.add_argument("--steps", type=int, help="optimizer steps (default: 300)")
    p.add_argument("--batch-size", type=int, help="sequences per micro-batch (default: 8)")
    p.add_argument("--seq-len", type=int, help="tokens per sequence (default: 256)")
    p.add_argument("--grad-accum", type=int, help="micro-batches per step (default: 1)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: 3e-3)")
    p.add_argument("--warmup", type=int, help="warmup steps (default: 20)")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay (default: 0.1)")
    p.add_argument("--clip", type=float, help="gradient norm clip (default: 1.0)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast")
    p.add_argument("--seed", type=int, help="random seed (default: 0)")
    p.add_argument("--save-every", type=int, help="checkpoint every N steps (default: 100)")
    p.add_argument("--eval-every", type=int, help="validate every N steps (default: 100)")
    p.add_argument("--eval-batches", type=int, help="validation batches (default: 8)")
    p.add_argument("--ep", type=int, help="under torchrun: expert-parallel degree (default: the largest dividing "
                   "both --dp-shard and the number of experts)")
    p.add_argument("--dp-shard", type=int, help="under torchrun: processes one FSDP shard group spans; the rest "
                   "replicate it (default: all)")
    p.add_argument("--activation-checkpointing", action="store_true",
                   help="recompute each block in backward instead of keeping its activations")
    add_device_arguments(p, dtype=False)
    p.add_argument("--chat-batch-size", type=int, help="conversations per step beside the text batch (presets with "
                   "images; default: the recipe's)")
    p.add_argument("--chat-length-groups", type=int, help="split a step's conversations into this many groups of like "
                   "lengths, each padded only to its own longest for attention (default 3; 1: one group)")
    p.add_argument("--padded-conversations", action="store_true", help="run each group of conversations as a "
                   "padded batch of its own instead of packing a step's conversations into one forward with no "
                   "padding (the step's clips likewise)")
    p.add_argument("--repeat-rows", type=int, help="rows of random text tokens written twice beside each step's text "
                   "batch, so the model learns to look up and copy from its context (default 0)")
    p.add_argument("--repeat-symbols", type=int, help="the repeats draw from this many text ids (default: all)")
    p.add_argument("--text-only", action="store_true", help="train an image preset on its text corpus alone: the "
                   "baseline its text loss is compared with")
    p.add_argument("--image-tokenizer", metavar="DIR", help="use this trained image tokenizer (from `hepta tokenizer "
                   "train image`) instead of training one in the run")
    p.add_argument("--image-tokenizer-steps", type=int, help="steps of the image tokenizer trained in the run")
    p.add_argument("--audio-tokenizer", metavar="DIR", help="use this trained audio tokenizer (from `hepta tokenizer "
                   "train audio`) instead of training one in the run")
    p.add_argument("--audio-tokenizer-steps", type=int, help="steps of the audio tokenizer trained in the run")
    p.add_argument("--speech-utterances", type=int, help="eSpeak NG recognition utterances of the run (synthesis "
                   "gets half as many; default: the recipe's)")
    p.add_argument("--speed-perturbation", action="store_true", help="speed up or slow down two thirds of the "
                   "recognition utterances by the recipe's range (tried, and it did not help: docs/multimodal.md)")
    p.add_argument("--no-augment", action="store_true", help="the embedded digits without the moved and turned "
                   "views recognition also learns from (an ablation)")
    p.add_argument("--random-code-init", action="store_true", help="image- and audio-code embeddings start as unrelated random "
                   "vectors rather than near their FSQ neighbours (an ablation)")
    p.add_argument("--no-video-captions", action="store_true", help="video questions after the video and no frame "
                   "captions; the recipe asks first and has the model caption each frame, marking the one that "
                   "answers (an ablation: docs/multimodal.md)")
    p.add_argument("--no-video-timestamps", action="store_true", help="video frames without their time written before "
                   "them: the model sees time only as position (an ablation)")
    p.add_argument("--video-loss-weight", type=float, help="how many times the video questions' loss counts beside "
                   "the text's and the conversations' (default: the recipe's, 2; 1 and 3 were tried: "
                   "docs/multimodal.md)")
    p.add_argument("--video-mark-weight", type=float, help="how many times the loss of the token after each video "
                   "frame's caption counts, where the model decides whether the frame answers the question (the mark) "
                   "or not (default: the recipe's; docs/multimodal.md)")
    p.add_argument("--video-mark-weight-moves", action="store_true", help="the mark weight takes its share from the "
                   "caption's other tokens instead of adding to the video loss, so the rest of the step keeps its "
                   "share of the gradient (docs/multimodal.md)")
    p.add_argument("--video-long-finish", type=float, help="the share of the run, at its end, whose video clips are "
                   "all long (100 s up to the longest), so that times past 2:00 are trained on (default: the "
                   "recipe's; docs/multimodal.md)")
    p.add_argument("--video-shifted-clocks", type=float, help="the share of video clips whose clock starts at a random "
                   "time before 10:00 instead of 0:00, so a frame's minute can only be copied from its timestamp "
                   "(default: the recipe's; docs/multimodal.md)")
    p.add_argument("--video-mark-units-anchor", metavar="TEXT", help="what a marked time holds before its last digit "
                   "(\",\" writes 0m2,7), so that each digit a reply copies follows a token only the mark holds; "
                   "with --digit-tokens --video-time-tokens (default: the recipe's, none; docs/multimodal.md)")
    p.add_argument("--video-stamps", choices=[form.value for form in StampForm], help="how video frames' "
                   "timestamps are written: text (\"0:14\" as the text tokenizer splits it), digits (a character a "
                   "token), time (each digit a time token, <|time_1|><|time_4|>) or tens (the recipe's: as time, the "
                   "seconds' tens digit a tens token, <|tens_1|><|time_4|>); docs/multimodal.md")
    p.add_argument("--no-video-stamp-digits", action="store_true", help="the same as --video-stamps text")
    p.add_argument("--video-time-tokens", action="store_true", help="the same as --video-stamps time")
    p.add_argument("--video-tens-tokens", action="store_true", help="the same as --video-stamps tens")
    p.add_argument("--no-video-frame-views", action="store_true", help="video training clips show each digit as its "
                   "training scan only; the recipe shows one of the moved and turned views image recognition learns "
                   "from, drawn per clip (an ablation: docs/multimodal.md)")
    p.add_argument("--digit-tokens", action="store_true", help="the text tokenizer writes every number a digit a "
                   "token, as Llama 2's and Qwen's do, where by default every two-digit number is one token (tried "
                   "for video times: the marks were right, the replies copied them wrong; docs/multimodal.md)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint "
                   "(on any number of processes)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("generate", help="continue a prompt with a trained model")
    p.add_argument("--model", required=True, help="model folder, or a Hugging Face Hub id")
    p.add_argument("--revision", help="branch, tag or commit of a Hub id (default: main)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--seed", type=int)
    p.add_argument("--stop", action="append", help="stop string (repeatable); not included in the output")
    p.add_argument("--image", action="append", metavar="PNG", help="an image the model reads before --prompt "
                   "(repeatable); the prompt becomes a chat user turn")
    p.add_argument("--image-out", metavar="PNG", help="write the answer's first image here; without --image the "
                   "model is asked to draw")
    p.add_argument("--allow-pickle", action="store_true", help="read .bin weights (with torch.load(weights_only=True))")
    add_device_arguments(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("demo", help="train tiny, generate, and show the presets")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("convert", help="Hugging Face folder (mixtral, olmoe, qwen2_moe, qwen3_moe, deepseek_v3) <-> hepta folder")
    p.add_argument("--from", dest="source", required=True, help="source model folder or Hugging Face Hub id; its "
                   "config.json decides the direction")
    p.add_argument("--revision", help="branch, tag or commit of a Hub id given to --from (default: main)")
    p.add_argument("--to", dest="target", required=True, help="output folder (new or empty)")
    p.add_argument("--to-type", metavar="TYPE",
                   help="Hugging Face type for a hepta source: mixtral, olmoe, qwen2_moe, qwen3_moe or deepseek_v3 "
                        "(default: inferred from its architecture)")
    p.add_argument("--allow-pickle", action="store_true", help="read .bin weights (with torch.load(weights_only=True))")
    p.set_defaults(func=cmd_convert)

    for commands in (serve_cli, live_cli, train_cli, tokenizer_cli, eval_cli):
        commands.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        args.func(args)
        return 0
    except (HeptaError, ValueError) as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # anything unexpected: still one line, the traceback behind --debug
        if debug:
            raise
        print(f"error: {type(e).__name__}: {e} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
