"""The flat field names of the first config.json format, and their place in the sectioned one.

Until the sections, a hepta config.json held every ModelConfig field at its top level
(`"num_experts": 16`, `"rope_theta": 1e6`). Those folders still load, and `hepta train --set`
still takes the flat names (runs saved their --set overrides under them). Every flat name maps to
exactly one field, so the translation needs no guessing.
"""

from __future__ import annotations

FLAT_TO_DOTTED: dict[str, str] = {
    # the trunk kept its names and place
    **{name: name for name in ("vocab_size", "dim", "num_layers", "max_seq_len", "tie_embeddings", "norm_eps")},
    **{name: f"attention.{name}" for name in (
        "num_heads", "num_kv_heads", "head_dim", "qk_norm", "qk_norm_per_head", "qkv_bias", "q_lora_rank",
        "kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim")},
    "attention": "attention.kind",
    **{f"rope_{name}": f"rope.{name}" for name in (
        "theta", "type", "factor", "original_max_len", "beta_fast", "beta_slow", "truncate", "mscale",
        "mscale_all_dim", "attention_factor")},
    **{name: f"moe.{name}" for name in (
        "num_experts", "top_k", "expert_hidden_dim", "num_shared_experts", "shared_expert_hidden_dim",
        "shared_expert_gate", "num_dense_layers", "dense_layers", "dense_hidden_dim")},
    "moe_layer_step": "moe.layer_step",
    "router_scoring": "router.scoring",
    **{name: f"router.{name}" for name in (
        "norm_topk_prob", "route_scale", "num_expert_groups", "num_limited_groups", "aux_loss_coef", "z_loss_coef",
        "bias_update_rate", "capacity_factor")},
}


def is_flat_v1(data: dict) -> bool:
    """A config.json of the flat format: none of its values is a section object.

    Every value of the flat format is a number, string, bool, null or (dense_layers) a list; the
    sectioned format writes attention, rope, moe and router as JSON objects, so one object
    under a section's name marks a sectioned file.
    """
    sections = {name.split(".")[0] for name in FLAT_TO_DOTTED.values() if "." in name}
    return not any(isinstance(data.get(name), dict) for name in sections)
