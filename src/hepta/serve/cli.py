"""`hepta serve` (the OpenAI/xAI-compatible API) and `hepta keys` (its API keys)."""

from __future__ import annotations

import argparse
import logging
import sys

from hepta.devices import add_device_arguments
from hepta.errors import HeptaError
from hepta.serve.keys_cli import add_keys_command

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def cmd_serve(args: argparse.Namespace) -> None:
    from pathlib import Path

    if args.api_keys is None and args.host not in LOOPBACK:
        raise HeptaError(f"--host {args.host} would open the API to the network without keys; add "
                         "--api-keys FILE (create keys with `hepta keys add NAME`) or serve on 127.0.0.1")
    if args.api_keys is not None and not Path(args.api_keys).is_file():
        raise HeptaError(f"--api-keys {args.api_keys} does not exist; create it with "
                         f"`hepta keys add NAME --file {args.api_keys}`")
    for folder in args.allow_image_dir or ():
        if not Path(folder).is_dir():
            raise HeptaError(f"--allow-image-dir {folder} is not a folder; pass an existing folder of images")
    if args.prefix_cache_mb is not None and args.prefix_cache_mb < 0:
        raise HeptaError(f"--prefix-cache-mb {args.prefix_cache_mb:g} is negative; pass 0 to keep no prefixes, or a size")
    if args.live_db is not None and not Path(args.live_db).is_file():
        raise HeptaError(f"--live-db {args.live_db} does not exist; fill one with `hepta live ingest --db PATH`")
    from hepta.interop.hub import is_hub_id, model_folder

    if is_hub_id(args.model):  # served under its id, as vLLM does
        args.name = args.name or args.model
    args.model = str(model_folder(args.model, args.revision))
    if not (Path(args.model) / "config.json").is_file():
        raise HeptaError(f"--model {args.model} is not a model folder (no config.json); pass a folder from "
                         "`hepta train` or `hepta convert`, a supported Hugging Face folder or a Hub id")
    from hepta.devices import resolve_device
    from hepta.infer.engine import EngineConfig

    device = resolve_device(args.device)  # a device that is not there fails here, before the engine starts
    from hepta.serve.app import ServeConfig, create_app
    from hepta.serve.runner import serve_forever

    engine = EngineConfig(max_num_seqs=args.max_num_seqs, max_model_len=args.max_model_len,
                          kv_cache_bytes=int(args.kv_cache_mb * 2**20) if args.kv_cache_mb else None,
                          max_queue=args.max_queue,
                          prefix_cache_bytes=None if args.prefix_cache_mb is None else int(args.prefix_cache_mb * 2**20))
    config = ServeConfig(model=args.model, model_name=args.name, engine=engine, api_keys=args.api_keys,
                         live_db=args.live_db, allow_pickle=args.allow_pickle,
                         allow_image_dirs=tuple(args.allow_image_dir or ()),
                         allow_remote_images=args.allow_remote_images,
                         responses_db=args.responses_db or ":memory:", max_body_mb=args.max_body_mb,
                         device=str(device), dtype=None if args.dtype == "auto" else args.dtype)
    app = create_app(config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    name = args.name or Path(args.model).name
    access = f"keys from {args.api_keys}" if args.api_keys else "open, no API keys: reachable from this machine only"
    print(f"hepta serve: model '{name}' on {device} at http://{args.host}:{args.port}/v1 ({access})", file=sys.stderr)
    serve_forever(app, args.host, args.port)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    from hepta.serve.body_limit import DEFAULT_MAX_BODY_MB  # starlette only: the parser stays free of torch

    p = subparsers.add_parser("serve", help="serve a model behind an OpenAI/xAI-compatible API")
    p.add_argument("--model", required=True, help="model folder (hepta or a supported Hugging Face folder) or a "
                   "Hugging Face Hub id such as Qwen/Qwen3-30B-A3B")
    p.add_argument("--revision", help="branch, tag or commit of a Hub id (default: main)")
    p.add_argument("--name", help="model id clients pass as `model` (default: the folder's name)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-keys", metavar="FILE", help="require keys from this file (see `hepta keys`)")
    p.add_argument("--live-db", metavar="PATH", help="post store for search_parameters and /v1/trends etc.")
    p.add_argument("--responses-db", metavar="PATH", help="SQLite file that keeps stored /v1/responses across "
                   "restarts (default: in memory)")
    p.add_argument("--max-num-seqs", type=int, default=32, help="sequences decoded together (default: 32)")
    p.add_argument("--max-model-len", type=int, help="prompt + completion tokens per sequence (default: the model's)")
    p.add_argument("--kv-cache-mb", type=float, help="KV cache memory budget in MiB (default: max-num-seqs "
                   "sequences of max-model-len tokens)")
    p.add_argument("--max-queue", type=int, default=256, help="waiting requests before 503s (default: 256)")
    p.add_argument("--prefix-cache-mb", type=float, help="memory for prompt prefixes kept so that a shared system "
                   "prompt or a conversation's history is not prefilled again (default: a quarter of the KV cache; "
                   "0 turns it off)")
    p.add_argument("--max-body-mb", type=float, default=DEFAULT_MAX_BODY_MB, help="larger request bodies get a 413 "
                   f"before they are read (default: {DEFAULT_MAX_BODY_MB})")
    p.add_argument("--allow-pickle", action="store_true", help="read .bin weights (with torch.load(weights_only=True))")
    p.add_argument("--allow-image-dir", action="append", metavar="DIR", help="let image_url and video_url parts name "
                   "local files inside DIR (repeatable; default: none)")
    p.add_argument("--allow-remote-images", action="store_true", help="fetch http(s) image URLs (with a timeout "
                   "and a size limit); refused by default")
    add_device_arguments(p)
    p.set_defaults(func=cmd_serve)
    add_keys_command(subparsers)
