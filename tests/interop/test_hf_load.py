"""Hugging Face MoE folders open in hepta with the logits and greedy tokens of transformers.

Small random models are built with transformers' own config and model classes (no hub),
saved with `save_pretrained`, and loaded by `hepta.load`.
"""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (GptOssConfig, GptOssForCausalLM, MixtralConfig, MixtralForCausalLM, OlmoeConfig,
                          OlmoeForCausalLM, Qwen2MoeConfig, Qwen2MoeForCausalLM, Qwen3_5MoeConfig,
                          Qwen3_5MoeForCausalLM, Qwen3_5MoeForConditionalGeneration, Qwen3_5MoeTextConfig,
                          Qwen3MoeConfig, Qwen3MoeForCausalLM)

import hepta
from helpers import greedy_pair, max_logit_difference, random_ids
from hepta.errors import HeptaError

SHAPE = dict(vocab_size=160, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=256, pad_token_id=None, eos_token_id=None, bos_token_id=None)

def qwen3_5_multimodal(**text) -> Qwen3_5MoeConfig:
    """Qwen3.5-MoE as released: the language model's config nested beside a (tiny) vision tower's."""
    return Qwen3_5MoeConfig(text_config=text, vision_config=dict(depth=1, hidden_size=32, intermediate_size=64,
                                                                 num_heads=2, out_hidden_size=64))


QWEN3_5_LINEAR = dict(linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=12)

CASES = {
    "mixtral-4e-top2": (MixtralConfig, MixtralForCausalLM, dict(intermediate_size=48, num_local_experts=4,
                                                               num_experts_per_tok=2)),
    "mixtral-8e-top3-theta": (MixtralConfig, MixtralForCausalLM, dict(intermediate_size=32, num_local_experts=8,
                                                                     num_experts_per_tok=3, num_hidden_layers=3,
                                                                     rope_parameters={"rope_type": "default",
                                                                                      "rope_theta": 5e5})),
    "olmoe-8e-top2": (OlmoeConfig, OlmoeForCausalLM, dict(intermediate_size=32, num_experts=8, num_experts_per_tok=2)),
    "olmoe-6e-top3-normed": (OlmoeConfig, OlmoeForCausalLM, dict(intermediate_size=40, num_experts=6,
                                                                num_experts_per_tok=3, norm_topk_prob=True,
                                                                num_key_value_heads=4)),
    "qwen2_moe-dense-layer-1": (Qwen2MoeConfig, Qwen2MoeForCausalLM, dict(
        intermediate_size=48, moe_intermediate_size=32, shared_expert_intermediate_size=40, num_experts=4,
        num_experts_per_tok=2, num_hidden_layers=3, decoder_sparse_step=1, mlp_only_layers=[1])),
    "qwen2_moe-step-2-normed": (Qwen2MoeConfig, Qwen2MoeForCausalLM, dict(
        intermediate_size=56, moe_intermediate_size=24, shared_expert_intermediate_size=64, num_experts=8,
        num_experts_per_tok=4, num_hidden_layers=4, decoder_sparse_step=2, norm_topk_prob=True)),
    # head_dim 32 with 4 heads of a 64-wide model: q_proj is 128 wide, so head_dim is never dim // heads
    "qwen3_moe-head-dim-32-normed": (Qwen3MoeConfig, Qwen3MoeForCausalLM, dict(
        intermediate_size=48, moe_intermediate_size=32, num_experts=8, num_experts_per_tok=2, head_dim=32,
        norm_topk_prob=True)),
    # 2 x moe_intermediate_size == hidden_size: the fused gate_up's orientation cannot be told from shapes
    "qwen3_moe-dense-layer-0-square": (Qwen3MoeConfig, Qwen3MoeForCausalLM, dict(
        intermediate_size=40, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=3, num_hidden_layers=3,
        mlp_only_layers=[0], norm_topk_prob=False)),
    # sliding-window layers alternating with full ones (windows shorter than the test prompts), sinks, biases
    # everywhere, YaRN as released, and a swiglu_limit that clamps a good share of the activations
    "gpt_oss-window-4-yarn": (GptOssConfig, GptOssForCausalLM, dict(
        intermediate_size=32, num_local_experts=4, num_experts_per_tok=2, head_dim=16, num_hidden_layers=3,
        sliding_window=4, swiglu_limit=0.1, rope_parameters={
            "rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
            "truncate": False, "original_max_position_embeddings": 4096})),
    "gpt_oss-window-6-no-attention-bias": (GptOssConfig, GptOssForCausalLM, dict(
        intermediate_size=24, num_local_experts=8, num_experts_per_tok=3, head_dim=32, num_hidden_layers=3,
        sliding_window=6, attention_bias=False, swiglu_alpha=1.2, swiglu_limit=0.2,
        layer_types=["full_attention", "sliding_attention", "sliding_attention"],
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
    # Gated DeltaNet layers beside gated attention with partial RoPE: three linear layers, then a full one
    "qwen3_5_moe_text-3-linear-1-full": (Qwen3_5MoeTextConfig, Qwen3_5MoeForCausalLM, dict(
        moe_intermediate_size=32, shared_expert_intermediate_size=40, num_experts=4, num_experts_per_tok=2,
        head_dim=16, num_hidden_layers=4, **QWEN3_5_LINEAR)),
    # the released folder layout (language model under model.language_model, a vision tower beside it), as
    # many value heads as key heads, rotary over half the head, and full attention first
    "qwen3_5_moe-multimodal-folder": (qwen3_5_multimodal, Qwen3_5MoeForConditionalGeneration, dict(
        moe_intermediate_size=24, shared_expert_intermediate_size=32, num_experts=8, num_experts_per_tok=3,
        head_dim=32, num_hidden_layers=3, layer_types=["full_attention", "linear_attention", "linear_attention"],
        linear_num_key_heads=4, linear_num_value_heads=4, linear_key_head_dim=16, linear_value_head_dim=8,
        linear_conv_kernel_dim=3, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                   "partial_rotary_factor": 0.5})),
}


def save_hf(case: str, folder):
    config_cls, model_cls, extra = CASES[case]
    torch.manual_seed(0)
    model = model_cls(config_cls(**{**SHAPE, **extra})).eval()
    with torch.no_grad():  # transformers starts biases and norms at constants and sinks near 0; make them count
        for name, param in model.named_parameters():
            if name.endswith(("bias", "sinks")):
                param.normal_(std=1.0 if name.endswith("sinks") else 0.1)
            elif "norm" in name:
                param.add_(torch.randn_like(param), alpha=0.2)
    model.save_pretrained(folder)
    return model


@pytest.fixture(scope="module", params=list(CASES))
def pair(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    return save_hf(request.param, folder), hepta.load(folder), folder


@pytest.mark.parametrize("seq_len", [1, 7, 33])
def test_logits_match_transformers(pair, seq_len):
    hf, ours, _ = pair
    assert max_logit_difference(hf, ours, random_ids(160, 2, seq_len, seed=seq_len)) <= 1e-4


def test_32_greedy_tokens_match_transformers_generate(pair):
    hf, ours, _ = pair
    expected, got, cache = greedy_pair(hf, ours, random_ids(160, 1, 5, seed=1), num_tokens=32)
    assert got == expected


def test_eight_requests_batched_in_the_engine_each_write_transformers_greedy_tokens(pair):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from hepta.infer.engine import Engine, EngineConfig, generate_many
    from hepta.infer.request import Request
    from hepta.infer.sampling import SamplingParams
    from hepta.loading import load_tokenizer

    hf, ours, folder = pair
    words = Tokenizer(models.WordLevel({f"w{i}": i for i in range(160)}, unk_token="w0"))
    PreTrainedTokenizerFast(tokenizer_object=words, eos_token="w159").save_pretrained(folder)
    prompts = [random_ids(160, 1, length, seed=length) for length in (5, 9, 1, 17, 3, 12, 6, 24)]
    with torch.no_grad():  # the end token is never chosen on either side, so both write all 32
        expected = [hf.generate(p, max_new_tokens=32, do_sample=False, suppress_tokens=[159])[0, p.shape[1]:].tolist()
                    for p in prompts]
    engine = Engine(ours, load_tokenizer(folder), EngineConfig(max_num_seqs=8)).start()
    try:  # all eight decoded together, each as transformers writes it alone
        got = generate_many(engine, [Request(p[0].tolist(), 32, SamplingParams(temperature=0.0),
                                             logit_bias={159: -100.0}) for p in prompts])
    finally:
        engine.stop()
    assert [choices[0].token_ids for choices in got] == expected


def test_unsupported_type_and_features_are_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(HeptaError, match="'gpt2'.*mixtral, olmoe, qwen2_moe"):
        hepta.load(tmp_path)
    folder = tmp_path / "sliding"
    config_cls, model_cls, extra = CASES["mixtral-4e-top2"]
    model_cls(config_cls(**{**SHAPE, **extra, "sliding_window": 16})).save_pretrained(folder)
    with pytest.raises(HeptaError, match="sliding_window=16"):
        hepta.load(folder)


def test_missing_tensor_wrong_shape_truncated_shard_and_pickle_only_are_refused(tmp_path):
    folder = tmp_path / "m"
    save_hf("olmoe-8e-top2", folder)
    weights_file = folder / "model.safetensors"
    weights = load_file(str(weights_file))
    original = weights_file.read_bytes()

    name = "model.layers.1.mlp.experts.3.up_proj.weight"
    save_file({k: v for k, v in weights.items() if k != name}, str(weights_file))
    with pytest.raises(HeptaError, match="lacks weights for.*layers.1.ffn.experts.gate_up_proj"):
        hepta.load(folder)

    save_file({**weights, name: torch.zeros(3, 3)}, str(weights_file))
    with pytest.raises(HeptaError, match=f"{name}.*shape"):
        hepta.load(folder)

    weights_file.write_bytes(original[: len(original) // 2])
    with pytest.raises(HeptaError, match="model.safetensors.*corrupt or truncated"):
        hepta.load(folder)

    weights_file.unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(HeptaError, match="pickle.*allow_pickle"):
        hepta.load(folder)


def test_pickle_weights_load_only_when_allowed_and_only_as_weights(tmp_path):
    folder = tmp_path / "bin"
    hf = save_hf("mixtral-4e-top2", folder)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(HeptaError, match="allow_pickle"):
        hepta.load(folder)
    ids = torch.randint(0, 160, (2, 9))
    with torch.no_grad():
        assert (hepta.load(folder, allow_pickle=True)(ids) - hf(ids).logits).abs().max() <= 1e-4

    class Payload:  # an object that is not plain tensors must never be unpickled
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"model.embed_tokens.weight": Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(HeptaError, match="pytorch_model.bin"):
        hepta.load(folder, allow_pickle=True)


def test_a_bf16_checkpoint_stays_bf16_unless_asked(tmp_path):
    config_cls, model_cls, extra = CASES["mixtral-4e-top2"]
    hf = model_cls(config_cls(**{**SHAPE, **extra})).to(torch.bfloat16).eval()
    hf.save_pretrained(tmp_path)
    ours = hepta.load(tmp_path)
    assert ours.embed.weight.dtype == torch.bfloat16
    assert ours.moe_layers()[0].router.expert_bias.dtype == torch.float32  # routing state stays fp32
    ids = random_ids(160, 2, 9, seed=0)
    with torch.no_grad():
        assert (ours(ids).float() - hf(ids).logits.float()).abs().max() < 0.05  # bf16 rounding only
    assert hepta.load(tmp_path, dtype=torch.float32).embed.weight.dtype == torch.float32


def test_old_format_pickle_weights_load_when_allowed(tmp_path):
    hf = save_hf("olmoe-8e-top2", tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    (tmp_path / "model.safetensors").unlink()
    torch.save(state, tmp_path / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    assert max_logit_difference(hf, hepta.load(tmp_path, allow_pickle=True), random_ids(160, 2, 5, seed=0)) <= 1e-4


def test_fused_experts_as_transformers_holds_them_load_even_when_the_shape_is_square(tmp_path):
    # transformers 5 keeps a layer's experts fused, gate_up_proj [E, 2F, D] (gate rows first); a folder
    # written from that state dict as it is must load the same. Here 2F == D, so the orientation can
    # only come from the type, never from the shape.
    folder = tmp_path / "fused"
    hf = save_hf("qwen3_moe-dense-layer-0-square", folder)
    state = hf.state_dict()
    fused = state["model.layers.1.mlp.experts.gate_up_proj"]
    assert fused.shape[1] == fused.shape[2] == 64
    (folder / "model.safetensors").unlink()
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    assert max_logit_difference(hf, hepta.load(folder), random_ids(160, 2, 9, seed=4)) <= 1e-4
