"""Human and JSON views of parameter counts (`hepta info`, the demo's preset table)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from hepta.config import ModelConfig, ParamCount, count_params, get_preset, preset_names
from hepta.tokenizer import VocabLayout

BF16_BYTES = 2


def human(n: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(int(n))


def human_bytes(n: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


def active_by_component(cfg: ModelConfig, count: ParamCount) -> dict[str, int]:
    active = dict(count.components)
    if cfg.has_moe:
        active["routed_experts"] = count.components["routed_experts"] * cfg.moe.top_k // cfg.moe.num_experts
    return active


def param_summary(name: str, cfg: ModelConfig) -> dict:
    count = count_params(cfg)
    return {
        "preset": name,
        "total_params": count.total,
        "active_params": count.active,
        "active_fraction": round(count.active_fraction, 4),
        "bf16_weight_bytes": count.total * BF16_BYTES,
        "components": count.components,
        "active_components": active_by_component(cfg, count),
        "vocab_blocks": vocab_layout(cfg).blocks(),
        "config": cfg.to_dict(),
    }


def vocab_layout(cfg: ModelConfig) -> VocabLayout:
    return VocabLayout.of_vocabulary(cfg.vocab_size, cfg.codes.image, cfg.codes.audio)


def describe_vocabulary(cfg: ModelConfig) -> str:
    """"vocab 131,072: text 0-111,304, special 111,305-111,336, ..." (the blocks, first and last id)."""
    blocks = ", ".join(f"{name} {first:,}-{end - 1:,}" for name, (first, end) in vocab_layout(cfg).blocks().items())
    return f"vocab {cfg.vocab_size:,}: {blocks}"


def print_param_table(name: str, cfg: ModelConfig, count: ParamCount, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"{name}: {human(count.total)} parameters, {human(count.active)} active per token "
                        f"({count.active_fraction:.1%}), bf16 weights {human_bytes(count.total * BF16_BYTES)}")
    table.add_column("component")
    table.add_column("total", justify="right")
    table.add_column("active", justify="right")
    active = active_by_component(cfg, count)
    for component, n in count.components.items():
        if n:
            table.add_row(component, f"{n:,}", f"{active[component]:,}")
    table.add_row("[bold]all", f"[bold]{count.total:,}", f"[bold]{count.active:,}")
    console.print(table)
    moe = (f"{cfg.moe.num_experts} routed experts, top-{cfg.moe.top_k}, {cfg.moe.num_shared_experts} shared, "
           f"{cfg.router.scoring} router" if cfg.has_moe else "dense")
    a = cfg.attention
    heads = (f"{a.num_heads} MLA heads, latent {a.kv_lora_rank}+{a.qk_rope_head_dim}" if a.kind == "mla"
             else f"{a.num_heads}/{a.num_kv_heads} heads of {a.head_dim}")
    console.print(f"{cfg.num_layers} layers ({cfg.moe.num_dense_layers} dense), d {cfg.dim}, {heads}; {moe}")
    console.print(describe_vocabulary(cfg) + ("" if cfg.codes.image else " (a text model: no image or audio codes)"),
                  soft_wrap=True)


def print_preset_table(console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title="presets")
    for column in ("preset", "params", "active/token", "layers x d", "experts", "bf16"):
        table.add_column(column, justify="left" if column == "preset" else "right", no_wrap=True)
    for name in preset_names():
        cfg = get_preset(name)
        count = count_params(cfg)
        moe = cfg.moe
        shared = f" +{moe.num_shared_experts}" if moe.num_shared_experts else ""
        experts = f"{moe.num_experts} top-{moe.top_k}{shared}" if cfg.has_moe else "dense"
        table.add_row(name, human(count.total), f"{human(count.active)} ({count.active_fraction:.0%})",
                      f"{cfg.num_layers} x {cfg.dim}", experts, human_bytes(count.total * BF16_BYTES))
    console.print(table)
