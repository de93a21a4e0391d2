"""The hepta decoder: pre-norm blocks of attention and (MoE or dense) SwiGLU feed-forward.

Dims: B batch, T tokens, D model dim, V vocabulary, E routed experts, L layers.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from hepta.config import ModelConfig, param_shapes
from hepta.model import decode_regions
from hepta.model.attention import Attention
from hepta.model.cache import SlotCache
from hepta.model.experts import ExpertsImplementation, GroupedExperts
from hepta.model.layers import RMSNorm, SwiGLU
from hepta.model.linear_attention import GatedDeltaNet
from hepta.model.matvec import Linear
from hepta.model.mla import MultiHeadLatentAttention
from hepta.model.moe import MoE
from hepta.model.packed_rows import PackedRows
from hepta.model.router import RouterLosses
from hepta.model.rope import RopeScaling, scaled_rope_cos_sin, softmax_scale_multiplier


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int, experts_implementation: ExpertsImplementation = "auto"):
        super().__init__()
        self.layer_idx = layer_idx
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps, cfg.zero_centered_norms)
        a = cfg.attention
        if layer_idx in a.linear_layers:
            self.attn = GatedDeltaNet(cfg.dim, a.linear_num_key_heads, a.linear_num_value_heads, a.linear_key_head_dim,
                                      a.linear_value_head_dim, a.linear_conv_kernel, cfg.norm_eps)
        elif a.kind == "mla":
            self.attn = MultiHeadLatentAttention(
                cfg.dim, a.num_heads, a.q_lora_rank, a.kv_lora_rank, a.qk_nope_head_dim, a.qk_rope_head_dim,
                a.v_head_dim,
                softmax_scale=a.qk_head_dim ** -0.5 * softmax_scale_multiplier(RopeScaling.from_config(cfg)))
        else:
            self.attn = Attention(cfg.dim, a.num_heads, a.num_kv_heads, a.head_dim, a.qk_norm, cfg.norm_eps,
                                  a.qk_norm_per_head, a.qkv_bias, a.o_bias, a.sinks, a.window(layer_idx), a.gated,
                                  cfg.zero_centered_norms)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps, cfg.zero_centered_norms)
        self.ffn = (MoE(cfg, experts_implementation) if cfg.is_moe_layer(layer_idx)
                    else SwiGLU(cfg.dim, cfg.moe.dense_hidden_dim))

    def forward(self, x_BTD, cos, sin, cache: SlotCache | None = None, rows: PackedRows | None = None):
        if decode_regions.applies(self, x_BTD, cache) and (out := decode_regions.decode_block(
                self, x_BTD, cos, sin, cache)) is not None:
            return out
        attend = (self.attn(self.attn_norm(x_BTD), cos, sin, cache, self.layer_idx) if rows is None else
                  self.attn(self.attn_norm(x_BTD), cos, sin, layer_idx=self.layer_idx, rows=rows))
        x_BTD = x_BTD + attend
        return x_BTD + self.ffn(self.ffn_norm(x_BTD))


def check_param_shapes(model: nn.Module, cfg: ModelConfig) -> None:
    """Raise unless `model`'s parameters are exactly `param_shapes(cfg)`, naming the first that differs.

    An explicit check rather than an assert, so that it holds under `python -O` too; one pass over
    names and shapes, cheap even for meta builds of the largest presets.
    """
    expected = {p.name: tuple(p.shape) for p in param_shapes(cfg)}
    for name, param in model.named_parameters():
        want = expected.pop(name, None)
        if want is None:
            raise RuntimeError(f"Transformer parameter {name} {tuple(param.shape)} is missing from "
                               f"hepta.config.param_shapes; add it there so parameter counts stay exact")
        if tuple(param.shape) != want:
            raise RuntimeError(f"Transformer parameter {name} has shape {tuple(param.shape)} but "
                               f"hepta.config.param_shapes gives {want}; make the two agree")
    if expected:
        name, want = next(iter(expected.items()))
        raise RuntimeError(f"hepta.config.param_shapes lists {name} {want}, which the Transformer does not "
                           f"build; make the two agree")


@dataclass
class VisualInput:
    """Vision features that take the place of placeholder tokens in a prefill (Qwen3-VL).

    Dims: N placeholder positions over the batch (row-major), L_ds DeepStack layers.
    """

    mask_BT: torch.Tensor  # bool: the placeholder positions
    embeds_ND: torch.Tensor  # what the embeddings there become
    positions_3BT: torch.Tensor  # multimodal RoPE positions (time, height, width) of every token
    rope_offsets_B: torch.Tensor  # each sequence's next position minus its length, for decoding after it
    deepstack_LND: list[torch.Tensor] = ()  # added at the placeholders after each of the first L_ds layers

    def to(self, device: torch.device | str) -> "VisualInput":
        """The same input on `device` (the language model's, when the encoder ran elsewhere)."""
        return VisualInput(self.mask_BT.to(device), self.embeds_ND.to(device), self.positions_3BT.to(device),
                           self.rope_offsets_B, [d.to(device) for d in self.deepstack_LND])


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig, *, experts_implementation: ExpertsImplementation = "auto"):
        """experts_implementation: the kernel of every MoE layer's routed experts (see model/experts.py)."""
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg, i, experts_implementation) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps, cfg.zero_centered_norms)
        self.output = Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.embed.weight
        # count_params sums param_shapes; holding the model to it keeps the analytic count exact
        check_param_shapes(self, cfg)

    def forward(self, input_ids_BT: torch.Tensor, cache: SlotCache | None = None,
                logits_at_BT: torch.Tensor | None = None, visual: VisualInput | None = None,
                rows: PackedRows | None = None) -> torch.Tensor:
        """Logits [B, T, V] for token ids [B, T]; with a cache, the ids continue its sequences.

        `logits_at_BT` (bool [B, T]) projects only the positions it marks, as [N, V] in row-major
        order: a loss over a few answer tokens skips the vocabulary projection everywhere else.
        `visual` puts vision features in place of placeholder tokens (a prefill only).
        `rows` says that the ids [1, N] are rows packed end to end (PackedRows.pack), for a training forward with
        no padding: each token sees its own row only, from its row's position.
        """
        if rows is not None:
            return self._packed_forward(input_ids_BT, rows, logits_at_BT, cache, visual)
        x_BTD, positions = self._embedded(input_ids_BT, cache, visual)
        if logits_at_BT is None and visual is None and (
                logits := self._decode_in_one_call(x_BTD, positions, cache, head=True)) is not None:
            return logits
        hidden_BTD = self._normed_blocks(x_BTD, positions, cache, visual)
        return self.output(hidden_BTD if logits_at_BT is None else hidden_BTD[logits_at_BT])

    def _packed_forward(self, input_ids_1N: torch.Tensor, rows: PackedRows, logits_at_1N: torch.Tensor | None,
                        cache: SlotCache | None, visual: VisualInput | None) -> torch.Tensor:
        if cache is not None or visual is not None:
            raise ValueError("packed rows are a training forward: no cache and no vision features")
        if not all(isinstance(layer.attn, Attention) for layer in self.layers):
            raise ValueError("packed rows need softmax attention in every layer; pad the rows for this model")
        x_1ND = self.embed(input_ids_1N)
        hidden_1ND = self.norm(self._blocks(x_1ND, *self.rope(rows.positions_N, x_1ND.dtype), None, None, rows))
        return self.output(hidden_1ND if logits_at_1N is None else hidden_1ND[logits_at_1N])

    def hidden_states(self, input_ids_BT: torch.Tensor, cache: SlotCache | None = None,
                      visual: VisualInput | None = None) -> torch.Tensor:
        """The final normed hidden states [B, T, D] (the LM head's input; pooled for embeddings)."""
        x_BTD, positions = self._embedded(input_ids_BT, cache, visual)
        if visual is None and (out := self._decode_in_one_call(x_BTD, positions, cache, head=False)) is not None:
            return out
        return self._normed_blocks(x_BTD, positions, cache, visual)

    def _embedded(self, input_ids_BT: torch.Tensor, cache: SlotCache | None,
                  visual: VisualInput | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The ids' embeddings [B, T, D], with vision features in place of their placeholders, and their rotary
        positions."""
        T = input_ids_BT.shape[1]
        positions = cache.positions(T) if cache is not None else torch.arange(T, device=input_ids_BT.device)
        x_BTD = self.embed(input_ids_BT)
        if visual is not None:
            assert cache is None or not cache.has_past, "vision features enter with the prompt, in its prefill"
            # one row (text positions) for a model without multimodal RoPE
            positions = visual.positions_3BT if self.config.rope.mrope_section else visual.positions_3BT[0]
            x_BTD = x_BTD.masked_scatter(visual.mask_BT[..., None], visual.embeds_ND.to(x_BTD.dtype))
            if cache is not None:
                cache.set_rope_offsets(visual.rope_offsets_B)
        return x_BTD, positions

    def _decode_in_one_call(self, x_BTD: torch.Tensor, positions: torch.Tensor, cache: SlotCache | None,
                            head: bool) -> torch.Tensor | None:
        """One sequence's decode step as one compiled call (decode_regions.decode_step) through the final norm, and
        with `head` the LM head too; None where that does not apply or does not compile."""
        if not decode_regions.step_applies(self.layers, x_BTD, cache):
            return None
        out = decode_regions.decode_step(self, x_BTD, positions, cache, head)
        if out is not None:
            cache.advance(x_BTD.shape[1])
        return out

    def _normed_blocks(self, x_BTD: torch.Tensor, positions: torch.Tensor, cache: SlotCache | None,
                       visual: VisualInput | None) -> torch.Tensor:
        x_BTD = self._blocks(x_BTD, *self.rope(positions, x_BTD.dtype), cache, visual)
        if cache is not None:
            cache.advance(x_BTD.shape[1])
        return self.norm(x_BTD)

    def rope(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The rotary cos and sin of `positions` ([T], [B, T] or multimodal [3, B, T]), in `dtype`."""
        cfg = self.config
        cos, sin = scaled_rope_cos_sin(positions, cfg.attention.rope_dim, cfg.rope.theta, RopeScaling.from_config(cfg),
                                       cfg.rope.mrope_section)
        return cos.to(dtype), sin.to(dtype)

    def _blocks(self, x_BTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: SlotCache | None,
                visual: VisualInput | None, rows: PackedRows | None = None) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x_BTD = layer(x_BTD, cos, sin, cache, rows)
            if visual is not None and i < len(visual.deepstack_LND):  # DeepStack: early vision features again
                x_BTD = x_BTD.masked_scatter(visual.mask_BT[..., None],
                                             x_BTD[visual.mask_BT] + visual.deepstack_LND[i].to(x_BTD.dtype))
        return x_BTD

    def use_row_sum_matvec(self, enabled: bool) -> None:
        """Single-row products on a CPU through model/matvec.py's multiply and row sum (True) or the BLAS (False)."""
        for module in self.modules():
            if isinstance(module, (Linear, GroupedExperts)):
                module.row_sum = enabled

    def use_packed_linear(self, enabled: bool) -> None:
        """fp32 products of several rows on a CPU through oneDNN on packed weights (model/packed_linear.py: the
        Linear layers' weights once more in memory) (True), or the BLAS (False)."""
        for module in self.modules():
            if isinstance(module, Linear):
                module.use_packed(enabled)

    # --- MoE bookkeeping -------------------------------------------------------------

    def moe_layers(self) -> list[MoE]:
        return [layer.ffn for layer in self.layers if isinstance(layer.ffn, MoE)]

    def router_loss(self) -> torch.Tensor:
        """Sum of the MoE layers' aux and z losses from the last forward (already weighted)."""
        losses = [moe.router_losses.total for moe in self.moe_layers() if moe.router_losses is not None]
        return torch.stack(losses).sum() if losses else torch.zeros(())

    def router_losses(self) -> list[RouterLosses]:
        """Each MoE layer's router losses from the last forward, to pool with other forwards'."""
        return [moe.router_losses for moe in self.moe_layers() if moe.router_losses is not None]

    def pooled_router_loss(self, forwards: list[list[RouterLosses]]) -> torch.Tensor:
        """Router loss of several forwards (each a `router_losses()`) as if they had been one batch:
        the balance loss sees their summed load, so it balances the whole, not each part."""
        losses = [moe.router.pooled_loss(list(layer_losses))
                  for moe, layer_losses in zip(self.moe_layers(), zip(*forwards))]
        return torch.stack(losses).sum() if losses else torch.zeros(())

    def expert_load(self) -> torch.Tensor:
        """Tokens per expert in the last forward, one row per MoE layer: [L_moe, E]."""
        moes = self.moe_layers()
        return torch.stack([moe.last_load for moe in moes]) if moes else torch.zeros(0, 0)

    @torch.no_grad()
    def update_expert_bias(self) -> None:
        """Apply aux-loss-free balancing from the load seen since the last call (after a step)."""
        for moe in self.moe_layers():
            moe.update_bias()

    def new_slot_cache(self, num_slots: int, max_len: int | None = None, dtype: torch.dtype | None = None,
                       device: torch.device | str | None = None) -> SlotCache:
        """Decoding caches for `num_slots` sequences of up to `max_len` tokens (continuous batching).

        On the meta device it only tells the size (`num_bytes`) without allocating.
        """
        cfg = self.config
        dtype = dtype or self.embed.weight.dtype
        conv_shape, recurrent_shape = cfg.attention.linear_state_shapes  # the recurrent state stays fp32
        return SlotCache(cfg.num_layers, num_slots, max_len or cfg.max_seq_len, cfg.attention.kv_cache_token_shapes,
                         dtype=dtype, device=device or self.embed.weight.device, kv_layers=cfg.softmax_attention_layers,
                         state_specs=((conv_shape, dtype), (recurrent_shape, torch.float32)),
                         state_layers=cfg.attention.linear_layers)

    # --- initialisation ----------------------------------------------------------------

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """GPT-2 style: N(0, 0.02), residual output projections scaled by 1/sqrt(2L)."""
        generator_ctx = torch.random.fork_rng(devices=[]) if seed is not None else nullcontext()
        with generator_ctx:
            if seed is not None:
                torch.manual_seed(seed)
            residual_std = 0.02 / math.sqrt(2 * self.config.num_layers)
            for name, module in self.named_modules():
                if isinstance(module, nn.Linear):
                    std = residual_std if name.endswith(("o_proj", "down_proj")) else 0.02
                    nn.init.normal_(module.weight, std=std)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
                elif isinstance(module, nn.Embedding):
                    nn.init.normal_(module.weight, std=0.02)
                elif isinstance(module, (RMSNorm, MoE, GatedDeltaNet)):
                    module.reset_parameters()
                elif isinstance(module, Attention) and module.sinks is not None:
                    nn.init.zeros_(module.sinks)  # no share for the sinks until training gives them one
            for moe in self.moe_layers():
                nn.init.normal_(moe.experts.down_proj, std=residual_std)

