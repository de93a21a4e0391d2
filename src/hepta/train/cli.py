"""`hepta` commands of the train layer: `hepta plan`, the scale layer's analytic plan of a training
run and, with --dry-run, a measurement of one step of it sharded by this layer's parallel code.

It lives here rather than beside the planner because the dry run needs `train/` and `scale/`
stays below `train/`."""

from __future__ import annotations

import argparse
import json


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Adds this layer's subcommands to the `hepta` parser."""
    from hepta.scale.energy import DEFAULT_PUE
    from hepta.scale.planner import DEFAULT_MIN_SHARD_GROUP

    p = subparsers.add_parser("plan", help="plan a training run on a GPU cluster: layout, memory, days, energy")
    p.add_argument("--preset", required=True, help="model preset, e.g. grok5-7t")
    p.add_argument("--gpus", type=int, required=True, help="number of GPUs")
    p.add_argument("--gpu", default="h200", help="GPU type: h100, h200, b200, h800")
    p.add_argument("--tokens", type=float, required=True, help="training tokens, e.g. 30e12")
    p.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation to expect (default 0.4)")
    p.add_argument("--seq-len", type=int, help="training sequence length (default: pretraining context, <= 8192)")
    p.add_argument("--batch-tokens", type=float,
                   help="cap on the global batch in tokens, e.g. 64e6 (default: one sequence per data-parallel rank)")
    for name in ("tp", "pp", "ep", "fsdp"):
        p.add_argument(f"--{name}", type=int, help=f"pin the {name} degree instead of searching it")
    p.add_argument("--min-shard-group", type=int, default=DEFAULT_MIN_SHARD_GROUP,
                   help=f"smallest EP x FSDP group searched (default {DEFAULT_MIN_SHARD_GROUP})")
    p.add_argument("--pue", type=float, default=DEFAULT_PUE,
                   help=f"facility power usage effectiveness (default {DEFAULT_PUE})")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", help="write a PNG chart to this file")
    p.add_argument("--dry-run", action="store_true",
                   help="also build the model on the meta device, shard it on a fake process group and measure")
    p.set_defaults(func=cmd_plan)


def cmd_plan(args: argparse.Namespace) -> None:
    from hepta.config import get_preset
    from hepta.scale.gpus import get_gpu
    from hepta.scale.planner import PlanRequest, make_plan

    request = PlanRequest(
        get_preset(args.preset), args.preset, args.gpus, get_gpu(args.gpu), args.tokens, mfu=args.mfu,
        seq_len=args.seq_len, batch_tokens=args.batch_tokens, tp=args.tp, pp=args.pp, ep=args.ep, fsdp=args.fsdp,
        min_shard_group=args.min_shard_group, pue=args.pue)
    plan = make_plan(request)
    result = plan.as_dict()
    if args.dry_run:
        from hepta.train.dryrun.measure import dry_run
        result["dry_run"] = dry_run(plan).as_dict()
    if args.plot:
        from hepta.scale.plot import plot_plan
        plot_plan(plan, args.plot)
    if args.json:
        print(json.dumps(result))
        return
    from hepta.scale.report import print_plan
    print_plan(plan, result.get("dry_run"))
    if args.plot:
        print(f"chart: {args.plot}")
