"""Named presets, one function each, in one registry: from `tiny` (2 CPU cores) to `grok5-7t`."""

from __future__ import annotations

from typing import Callable

from hepta.config.model_config import ModelConfig
from hepta.config.sections import AttentionConfig, CodesConfig, MoEConfig, RopeConfig, RouterConfig
from hepta.errors import HeptaError

_PRESETS: dict[str, Callable[[], ModelConfig]] = {}


def preset(name: str):
    def register(fn: Callable[[], ModelConfig]):
        _PRESETS[name] = fn
        return fn
    return register


def preset_names() -> list[str]:
    return list(_PRESETS)


def get_preset(name: str) -> ModelConfig:
    if name not in _PRESETS:
        raise HeptaError(f"unknown preset {name!r}; choose one of: {', '.join(_PRESETS)}")
    return _PRESETS[name]()


@preset("tiny")
def tiny() -> ModelConfig:
    """Fine-grained experts plus a shared expert; trains on 2 CPU cores in minutes."""
    return ModelConfig(
        vocab_size=4096, dim=192, num_layers=4, max_seq_len=512,
        attention=AttentionConfig(num_heads=6, num_kv_heads=2, head_dim=32, qk_norm=True),
        moe=MoEConfig(num_experts=16, top_k=2, expert_hidden_dim=128, num_shared_experts=1,
                      num_dense_layers=1, dense_hidden_dim=512),
        # runs last only hundreds of steps, so balancing must act within tens of them
        router=RouterConfig(scoring="sigmoid", norm_topk_prob=True, route_scale=1.0,
                            aux_loss_coef=1e-2, z_loss_coef=1e-4, bias_update_rate=1e-2),
    )


@preset("omni-tiny")
def omni_tiny() -> ModelConfig:
    """`tiny` that reads and writes images and speech and reads video: 4064 text ids, 32 special,
    125 image codes (4x4 per 8x8 image), 1000 audio codes (25 a second).

    The vocabulary must match the recipe's tokenizers (hepta.train.recipes): the image code block is
    appended after the special tokens and the audio block after it, so text ids are those of a
    text-only tiny model.
    """
    # a 3-minute clip at 1 frame per second is ~4,700 tokens (26 a frame) plus its questions
    return tiny().with_changes({"vocab_size": 4064 + 32 + 125 + 1000, "max_seq_len": 6144,
                                "codes.image": 125, "codes.audio": 1000})


@preset("small")
def small() -> ModelConfig:
    """~200M total / ~50M active: a model for a single workstation GPU."""
    return ModelConfig(
        vocab_size=32768, dim=768, num_layers=12, max_seq_len=4096,
        attention=AttentionConfig(num_heads=12, num_kv_heads=4, head_dim=64, qk_norm=True),
        moe=MoEConfig(num_experts=32, top_k=4, expert_hidden_dim=384, num_shared_experts=1,
                      num_dense_layers=1, dense_hidden_dim=2048),
        router=RouterConfig(scoring="sigmoid", aux_loss_coef=1e-3, z_loss_coef=1e-4, bias_update_rate=1e-3),
    )


@preset("mixtral-8x7b")
def mixtral_8x7b() -> ModelConfig:
    """Mixtral 8x7B: 46.7B total, 12.9B active."""
    return ModelConfig(
        vocab_size=32000, dim=4096, num_layers=32, max_seq_len=32768, norm_eps=1e-5,
        attention=AttentionConfig(num_heads=32, num_kv_heads=8, head_dim=128, qk_norm=False),
        rope=RopeConfig(theta=1e6),
        moe=MoEConfig(num_experts=8, top_k=2, expert_hidden_dim=14336),
        router=RouterConfig(scoring="softmax", norm_topk_prob=True, aux_loss_coef=0.02),
    )


@preset("grok-1")
def grok_1() -> ModelConfig:
    """Grok-1 as released: 64 layers, d 6144, 48/8 heads, 8 experts top-2, ~314B."""
    return ModelConfig(
        vocab_size=131072, dim=6144, num_layers=64, max_seq_len=8192, tie_embeddings=True,
        attention=AttentionConfig(num_heads=48, num_kv_heads=8, head_dim=128, qk_norm=False),
        moe=MoEConfig(num_experts=8, top_k=2, expert_hidden_dim=32768),
        router=RouterConfig(scoring="softmax", norm_topk_prob=False),
    )


@preset("deepseek-v3")
def deepseek_v3() -> ModelConfig:
    """DeepSeek-V3 without its multi-token-prediction module: 671B total, 37.6B active.

    Multi-head latent attention caches 512 + 64 values per token and layer; 256 fine-grained
    routed experts (top-8 within the best 4 of 8 groups) plus one shared expert; the first 3
    layers dense; YaRN extends the 4K pretraining context 40x.
    """
    return ModelConfig(
        vocab_size=129280, dim=7168, num_layers=61, max_seq_len=163840,
        attention=AttentionConfig(kind="mla", num_heads=128, num_kv_heads=128, head_dim=64, qk_norm=False,
                                  q_lora_rank=1536, kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128,
                                  v_head_dim=128),
        rope=RopeConfig(type="yarn", factor=40.0, original_max_len=4096, mscale=1.0, mscale_all_dim=1.0),
        moe=MoEConfig(num_experts=256, top_k=8, expert_hidden_dim=2048, num_shared_experts=1,
                      num_dense_layers=3, dense_hidden_dim=18432),
        router=RouterConfig(scoring="sigmoid", norm_topk_prob=True, route_scale=2.5,
                            num_expert_groups=8, num_limited_groups=4, aux_loss_coef=1e-4, bias_update_rate=1e-3),
    )


@preset("grok5-7t")
def grok5_7t() -> ModelConfig:
    """A 7.0T-parameter sparse MoE with 31% of its parameters active per token.

    Design reasoning:
    - "70% inactive" is a much denser MoE than DeepSeek-V3 (5.5% active) or Kimi K2 (3%):
      each token runs ~2.2T parameters. We get there with coarse routing (top-8 of 32 routed
      experts = 25% of routed weights) plus two always-on shared experts that carry common
      knowledge (DeepSeekMoE); attention and embeddings add the rest: (8+2)/(32+2) = 29%
      of the FFN weights, 31% of all weights.
    - d_model 24576 (4x Grok-1) and 96 layers (1.5x): per-layer matmuls large enough for
      tensor parallelism of 8 inside an NVLink domain without starving the GEMMs.
    - 192 query heads of 128 with 16 KV heads (GQA 12:1) keep the KV cache at
      2*96*16*128 values per token, so long-video contexts fit on an inference replica.
    - 32 routed experts divide evenly over EP degrees 2-32; expert hidden 29440 (a multiple
      of 128 for tensor cores) makes each expert a 2.2B-parameter block that shards cleanly.
    - Sigmoid scoring with aux-loss-free bias balancing (DeepSeek-V3) avoids the quality cost
      of a strong auxiliary loss; a tiny aux loss stays as a guard against collapse.
    - The first 3 layers are dense (SwiGLU, 4x d) since early-layer routing specialises
      poorly and dense layers stabilise early training.
    - Vocab 131072 as in Grok-1, of which 15,360 image codes (FSQ levels 8,8,8,6,5, the FSQ
      paper's choice for a 2^14 codebook) and 4,375 audio codes (7,5,5,5,5, its 2^12 choice)
      appended after 111,305 text and 32 special ids; video frames are images between markers.
    """
    return ModelConfig(
        vocab_size=131072, dim=24576, num_layers=96, max_seq_len=131072,
        attention=AttentionConfig(num_heads=192, num_kv_heads=16, head_dim=128, qk_norm=True),
        rope=RopeConfig(theta=1e6),
        moe=MoEConfig(num_experts=32, top_k=8, expert_hidden_dim=29440, num_shared_experts=2,
                      num_dense_layers=3, dense_hidden_dim=98304),
        router=RouterConfig(scoring="sigmoid", norm_topk_prob=True, route_scale=2.5,
                            aux_loss_coef=1e-4, z_loss_coef=1e-5, bias_update_rate=1e-3),
        codes=CodesConfig(image=15360, audio=4375),
    )


@preset("llama3-405b")
def llama3_405b() -> ModelConfig:
    """Llama 3.1 405B as published (Meta, "The Llama 3 Herd of Models", 2024, table 3): a dense model.

    126 layers, d 16384, 128 query / 8 KV heads of 128, SwiGLU hidden 53248, vocab 128256,
    RoPE theta 500000, 8192-token pretraining context; 405.9B parameters. Every layer is dense,
    which is how `ModelConfig` expresses a model without experts (moe.num_dense_layers = num_layers).
    """
    return ModelConfig(
        vocab_size=128256, dim=16384, num_layers=126, max_seq_len=8192, norm_eps=1e-5,
        attention=AttentionConfig(num_heads=128, num_kv_heads=8, head_dim=128, qk_norm=False),
        rope=RopeConfig(theta=500000.0),
        moe=MoEConfig(num_dense_layers=126, dense_hidden_dim=53248),
    )
