"""Loading streams: peak memory stays near one copy of the weights."""

import subprocess
import sys
import textwrap

import pytest


CONFIGS = {  # ~400 MB of fp32 weights each: (config class, model class, fields beyond the shared ones)
    "Mixtral": ("MixtralConfig", "MixtralForCausalLM", "intermediate_size=2048, num_local_experts=8"),
    "Qwen3Moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM",
                 "intermediate_size=2048, moe_intermediate_size=2048, num_experts=8"),
    # experts fused, gate and up interleaved
    "GptOss": ("GptOssConfig", "GptOssForCausalLM", "intermediate_size=2048, num_local_experts=8, head_dim=64"),
    # linear-attention layers beside a full one
    "Qwen3_5Moe": ("Qwen3_5MoeTextConfig", "Qwen3_5MoeForCausalLM",
                   "moe_intermediate_size=2048, shared_expert_intermediate_size=512, num_experts=8, head_dim=64, "
                   "linear_num_key_heads=4, linear_num_value_heads=8, linear_key_head_dim=64, linear_value_head_dim=64"),
}


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_loading_a_few_hundred_mb_checkpoint_never_holds_the_weights_twice(tmp_path, kind):
    folder = tmp_path / "big"
    config_class, model_class, fields = CONFIGS[kind]
    # one safetensors file, written by transformers in its own process
    subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import torch
        from transformers import {config_class}, {model_class}
        cfg = {config_class}(vocab_size=1024, hidden_size=512, num_hidden_layers=4, num_attention_heads=8,
                             num_key_value_heads=4, num_experts_per_tok=2, pad_token_id=None, eos_token_id=None,
                             bos_token_id=None, {fields})
        with torch.device("meta"):
            model = {model_class}(cfg)
        model = model.to_empty(device="cpu")
        for p in model.parameters():
            p.data.normal_(std=0.02)
        model.save_pretrained({str(folder)!r}, max_shard_size="10GB")
    """)], check=True, capture_output=True)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import resource, torch, hepta
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        model = hepta.load({str(folder)!r})
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        print(weights, peak - before)
    """)], check=True, capture_output=True, text=True)
    weights, grown = map(int, out.stdout.split())
    assert weights > 300e6
    print(f"peak grew by {grown / weights:.2f}x the weights")
    assert grown <= 1.3 * weights, f"peak grew by {grown / weights:.2f}x the weights"
