"""Gated DeltaNet linear attention (Qwen3-Next, Qwen3.5): in place of softmax attention, each value head
keeps a [Dk, Dv] state that every token decays and corrects, so a sequence costs the same memory at
token 10 and at token 100,000.

Per token t and value head (key heads are shared by groups of value heads):
    S_t = exp(g_t) S_{t-1} + k_t beta_t (v_t - exp(g_t) S_{t-1}^T k_t)^T      the delta rule with decay
    o_t = S_t^T q_t / sqrt(Dk)
with q, k L2-normalised per head, beta = sigmoid(b), g = -exp(A_log) softplus(a + dt_bias) <= 0. Before
that, q, k and v pass a causal depthwise convolution (conv_kernel taps) and silu; after it, each head's
output is RMS-normed and gated by silu(z), then projected back to the model width.

A prefill runs the rule in chunks of C tokens: within a chunk the corrections form a unit lower-
triangular system, solved at once, and the state moves on once per chunk. A decode step applies the
recurrence to one token. Both read and write the layer's state in the cache: the convolution's last
K - 1 inputs and the recurrent state (fp32).

Dims: B batch, T tokens, D model dim, Hk key heads, Hv value heads, Dk key head dim, Dv value head dim,
Cc conv channels (q, k and v together), K conv taps, C chunk length, N chunks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hepta.model.cache import SlotCache
from hepta.model.matvec import Linear

CHUNK = 64


def l2_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + eps)


def gated_delta_rule_chunked(q_BHTK, k_BHTK, v_BHTV, beta_BHT, g_BHT, state_BHKV: torch.Tensor | None = None,
                             chunk: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs [B, H, T, Dv] and the final state [B, H, Dk, Dv] of the rule over T tokens (all fp32, q
    already scaled), starting from `state_BHKV` (None: zeros)."""
    B, H, T, Dk = k_BHTK.shape
    Dv = v_BHTV.shape[-1]
    pad = (-T) % chunk
    if pad:  # padded steps carry beta = 0 and g = 0: they leave the state as it is
        q_BHTK, k_BHTK, v_BHTV = (F.pad(x, (0, 0, 0, pad)) for x in (q_BHTK, k_BHTK, v_BHTV))
        beta_BHT, g_BHT = (F.pad(x, (0, pad)) for x in (beta_BHT, g_BHT))
    N = (T + pad) // chunk
    q, k, v = (x.reshape(B, H, N, chunk, x.shape[-1]) for x in (q_BHTK, k_BHTK, v_BHTV))
    beta, g = beta_BHT.reshape(B, H, N, chunk), g_BHT.reshape(B, H, N, chunk)
    decay = g.cumsum(dim=-1)  # log of the decay from the chunk's start through each token
    # decay between token j and a later token i of the same chunk, exp(decay_i - decay_j); 0 above the diagonal
    later = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).triu(1)
    pair_decay = (decay[..., :, None] - decay[..., None, :]).masked_fill(later, float("-inf")).exp()
    k_beta = k * beta[..., None]
    # Each token's correction depends on the earlier ones' through k_i . k_j: solve for all of them at once
    # (the diagonal is taken as 1, as the unit lower-triangular system has it)
    system = (k_beta @ k.transpose(-1, -2)) * pair_decay
    corrected_v = torch.linalg.solve_triangular(system, v * beta[..., None], upper=False, unitriangular=True)
    state_weights = torch.linalg.solve_triangular(system, k_beta * decay.exp()[..., None], upper=False,
                                                  unitriangular=True)
    within = (q @ k.transpose(-1, -2)) * pair_decay  # token-to-token weights inside a chunk
    q_decayed = q * decay.exp()[..., None]
    k_to_end = k * (decay[..., -1:] - decay).exp()[..., None]
    chunk_decay = decay[..., -1].exp()[..., None, None]
    state = q.new_zeros(B, H, Dk, Dv) if state_BHKV is None else state_BHKV.to(q.dtype)
    out = torch.empty_like(corrected_v)
    for n in range(N):
        new_v = corrected_v[:, :, n] - state_weights[:, :, n] @ state  # what the state before the chunk misses
        out[:, :, n] = q_decayed[:, :, n] @ state + within[:, :, n] @ new_v
        state = state * chunk_decay[:, :, n] + k_to_end[:, :, n].transpose(-1, -2) @ new_v
    return out.reshape(B, H, N * chunk, Dv)[:, :, :T], state


def gated_delta_rule_step(q_BHK, k_BHK, v_BHV, beta_BH, g_BH, state_BHKV: torch.Tensor) -> torch.Tensor:
    """One token per sequence: updates `state_BHKV` in place (fp32) and returns the outputs [B, H, Dv]."""
    state_BHKV.mul_(g_BH.exp()[..., None, None])
    remembered_BHV = (state_BHKV * k_BHK[..., None]).sum(dim=-2)
    delta_BHV = (v_BHV - remembered_BHV) * beta_BH[..., None]
    state_BHKV.add_(k_BHK[..., None] * delta_BHV[..., None, :])
    return (state_BHKV * q_BHK[..., None]).sum(dim=-2)


class GatedRMSNorm(nn.Module):
    """RMSNorm of each head's output, then times silu(gate) (in fp32)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        normed = F.rms_norm(x.float(), (x.shape[-1],), None, self.eps).to(x.dtype) * self.weight
        return (normed * F.silu(gate.float())).to(x.dtype)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


class GatedDeltaNet(nn.Module):
    def __init__(self, dim: int, num_key_heads: int, num_value_heads: int, key_head_dim: int, value_head_dim: int,
                 conv_kernel: int, norm_eps: float):
        super().__init__()
        self.Hk, self.Hv, self.Dk, self.Dv = num_key_heads, num_value_heads, key_head_dim, value_head_dim
        self.key_dim, self.value_dim = num_key_heads * key_head_dim, num_value_heads * value_head_dim
        channels = 2 * self.key_dim + self.value_dim
        # names as Hugging Face's Qwen3.5 holds them, so checkpoints map one to one
        self.in_proj_qkv = Linear(dim, channels, bias=False)
        self.in_proj_z = Linear(dim, self.value_dim, bias=False)
        self.in_proj_b = Linear(dim, num_value_heads, bias=False)
        self.in_proj_a = Linear(dim, num_value_heads, bias=False)
        self.conv1d = nn.Conv1d(channels, channels, conv_kernel, groups=channels, bias=False)
        self.dt_bias = nn.Parameter(torch.ones(num_value_heads))
        self.A_log = nn.Parameter(torch.zeros(num_value_heads))
        self.norm = GatedRMSNorm(value_head_dim, norm_eps)
        self.out_proj = Linear(self.value_dim, dim, bias=False)

    def forward(self, x_BTD: torch.Tensor, cos=None, sin=None, cache: SlotCache | None = None,
                layer_idx: int = 0) -> torch.Tensor:
        """cos and sin are unused (no positions here: order comes from the recurrence); the signature is
        softmax attention's, so a block calls either the same way."""
        B, T, _ = x_BTD.shape
        assert cache is None or not cache.parts, "packed forwards cover softmax attention only"
        decoding = cache is not None and cache.has_past
        conv_state = recurrent_state = None
        if cache is not None:
            conv_state, recurrent_state = cache.state(layer_idx)  # [B, Cc, K-1], [B, Hv, Dk, Dv]
        lengths = cache.prompt_lengths if cache is not None else None

        qkv_BCT = self.in_proj_qkv(x_BTD).transpose(1, 2)
        qkv_BCT = self._conv_step(qkv_BCT, conv_state) if decoding else self._conv_prefill(qkv_BCT, conv_state,
                                                                                             lengths)
        q, k, v = qkv_BCT.transpose(1, 2).split([self.key_dim, self.key_dim, self.value_dim], dim=-1)
        q_BHTK, k_BHTK = (self._heads(t, self.Hk, self.Dk).repeat_interleave(self.Hv // self.Hk, dim=1)
                          for t in (q, k))
        q_BHTK = l2_normalize(q_BHTK) * self.Dk ** -0.5
        k_BHTK = l2_normalize(k_BHTK)
        v_BHTV = self._heads(v, self.Hv, self.Dv)
        beta_BHT = torch.sigmoid(self.in_proj_b(x_BTD).float()).transpose(1, 2)
        g_BHT = (-self.A_log.float().exp() * F.softplus(self.in_proj_a(x_BTD).float() + self.dt_bias.float())
                 ).transpose(1, 2)
        if lengths is not None:  # right padding: beta = g = 0 there, so the state stops at each real end
            real_BT = torch.arange(T, device=x_BTD.device)[None, :] < lengths.to(x_BTD.device)[:, None]
            beta_BHT, g_BHT = beta_BHT * real_BT[:, None], g_BHT * real_BT[:, None]

        if decoding:
            out_BHTV = gated_delta_rule_step(q_BHTK[:, :, 0], k_BHTK[:, :, 0], v_BHTV[:, :, 0], beta_BHT[:, :, 0],
                                             g_BHT[:, :, 0], recurrent_state)[:, :, None]
        else:
            out_BHTV, final = gated_delta_rule_chunked(q_BHTK, k_BHTK, v_BHTV, beta_BHT, g_BHT)
            if recurrent_state is not None:
                recurrent_state.copy_(final)
        z_BTHV = self.in_proj_z(x_BTD).view(B, T, self.Hv, self.Dv)
        out_BTHV = self.norm(out_BHTV.transpose(1, 2).to(x_BTD.dtype), z_BTHV)
        return self.out_proj(out_BTHV.reshape(B, T, self.value_dim))

    @staticmethod
    def _heads(x_BTX: torch.Tensor, heads: int, head_dim: int) -> torch.Tensor:
        B, T, _ = x_BTX.shape
        return x_BTX.float().view(B, T, heads, head_dim).transpose(1, 2)

    def _conv_prefill(self, x_BCT: torch.Tensor, conv_state: torch.Tensor | None,
                      lengths: torch.Tensor | None) -> torch.Tensor:
        """Causal depthwise convolution and silu over fresh sequences; keeps each one's last K-1 real inputs."""
        K, T = self.conv1d.kernel_size[0], x_BCT.shape[-1]
        padded_BCT = F.pad(x_BCT, (K - 1, 0))  # zeros before the first token
        if conv_state is not None:
            ends = lengths.to(x_BCT.device) if lengths is not None else torch.full((x_BCT.shape[0],), T,
                                                                                    device=x_BCT.device)
            # inputs ends-K+1 .. ends-1 sit at padded positions ends .. ends+K-2
            taps_BK = ends[:, None] + torch.arange(K - 1, device=x_BCT.device)[None, :]
            conv_state.copy_(padded_BCT.gather(2, taps_BK[:, None, :].expand(-1, x_BCT.shape[1], -1)))
        return F.silu(F.conv1d(padded_BCT, self.conv1d.weight, groups=x_BCT.shape[1]))

    def _conv_step(self, x_BC1: torch.Tensor, conv_state: torch.Tensor) -> torch.Tensor:
        """One new input per sequence through the convolution, its window being the state plus the input."""
        window_BCK = torch.cat([conv_state, x_BC1.to(conv_state.dtype)], dim=-1)
        conv_state.copy_(window_BCK[..., 1:])
        return F.silu((window_BCK * self.conv1d.weight[:, 0]).sum(dim=-1, keepdim=True)).to(x_BC1.dtype)

    def reset_parameters(self) -> None:
        for linear in (self.in_proj_qkv, self.in_proj_z, self.in_proj_b, self.in_proj_a, self.out_proj):
            nn.init.normal_(linear.weight, std=0.02)
        nn.init.normal_(self.conv1d.weight, std=0.02)
        nn.init.ones_(self.dt_bias)
        # decay rates spread as Qwen3.5 starts them: A uniform in [1, 16]
        with torch.no_grad():
            self.A_log.copy_(torch.empty_like(self.A_log).uniform_(1, 16).log())
        self.norm.reset_parameters()
