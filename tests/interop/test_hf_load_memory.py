"""Loading streams: peak memory stays near one copy of the weights."""

import subprocess
import sys
import textwrap


def test_loading_a_few_hundred_mb_checkpoint_never_holds_the_weights_twice(tmp_path):
    folder = tmp_path / "big"
    # ~400 MB of fp32 weights in one safetensors file, written by transformers in its own process
    subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import torch
        from transformers import MixtralConfig, MixtralForCausalLM
        cfg = MixtralConfig(vocab_size=1024, hidden_size=512, intermediate_size=2048, num_hidden_layers=4,
                            num_attention_heads=8, num_key_value_heads=4, num_local_experts=8,
                            num_experts_per_tok=2, pad_token_id=None, eos_token_id=None, bos_token_id=None)
        with torch.device("meta"):
            model = MixtralForCausalLM(cfg)
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
