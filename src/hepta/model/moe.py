"""Mixture-of-Experts feed-forward: router -> dropless dispatch -> experts -> weighted combine,
plus shared experts that every token uses.

Dims: B batch, T tokens, N = B*T, D model dim, E routed experts, K experts per token,
M = N*K routed token copies.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from hepta.config import ModelConfig
from hepta.model.experts import ExpertsImplementation, GroupedExperts, clamped_swiglu, swiglu
from hepta.model.layers import SwiGLU
from hepta.model.matvec import Linear
from hepta.model.router import Router, RouterLosses


class MoE(nn.Module):
    def __init__(self, cfg: ModelConfig, experts_implementation: ExpertsImplementation = "auto"):
        super().__init__()
        self.cfg = cfg
        self.router = Router(cfg)
        moe = cfg.moe
        activation = (swiglu if moe.expert_activation == "swiglu"
                      else functools.partial(clamped_swiglu, alpha=moe.swiglu_alpha, limit=moe.swiglu_limit))
        self.experts = GroupedExperts(moe.num_experts, cfg.dim, moe.expert_hidden_dim, experts_implementation,
                                      bias=moe.expert_proj_bias, activation=activation)
        self.shared_experts = SwiGLU(cfg.dim, cfg.moe.shared_hidden_dim) if cfg.moe.shared_hidden_dim else None
        # Qwen2-MoE lets each token decide how much of the shared experts it takes
        self.shared_gate = (Linear(cfg.dim, 1, bias=False)
                            if cfg.moe.shared_expert_gate and self.shared_experts is not None else None)
        # Observability: tokens per expert in the last forward, and accumulated since the last
        # bias update (so balancing sees every micro-batch of an accumulated step).
        self.register_buffer("last_load", torch.zeros(cfg.moe.num_experts), persistent=False)
        self.register_buffer("load_since_update", torch.zeros(cfg.moe.num_experts), persistent=False)
        self.router_losses: RouterLosses | None = None  # of the last forward
        self.last_experts_NK: torch.Tensor | None = None  # each token's chosen experts in the last forward

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        B, T, D = x_BTD.shape
        x_ND = x_BTD.reshape(B * T, D)
        routing = self.router(x_ND)
        self.router_losses = routing.losses
        self.last_experts_NK = routing.experts_NK.detach()
        with torch.no_grad():
            self.last_load.copy_(routing.load_E)
            if self.training:  # feeds the bias update, which only training applies
                self.load_since_update += routing.load_E

        # decoding: a few tokens' experts as row sums over their copies where they can be
        few = (self.experts.few_tokens(x_ND, routing.experts_NK, routing.weights_NK)
               if self.takes_copies(B * T) else None)
        if few is not None:
            out_ND = few
        else:
            order_M, counts = self._sort_by_expert(routing.experts_NK, routing.load_E)
            token_M = order_M // self.cfg.moe.top_k
            out_ND = self.experts(x_ND, routing.weights_NK.flatten()[order_M], token_M, counts)
        if self.shared_experts is not None:
            shared_ND = self.shared_experts(x_ND)
            if self.shared_gate is not None:
                shared_ND = torch.sigmoid(self.shared_gate(x_ND)) * shared_ND
            out_ND += shared_ND  # in place: out_ND is a fresh buffer of the experts
        return out_ND.view(B, T, D)

    def takes_copies(self, tokens: int) -> bool:
        """Whether `tokens` tokens' experts run as row sums over their routed copies (`GroupedExperts.few_tokens`),
        with no host sync: a capacity limit, which may drop copies, leaves them to the sort below unless there is
        one token, whose copies no capacity drops."""
        capacity = self.cfg.router.capacity_factor is not None and tokens > 1
        return not capacity and self.experts.takes_copies(tokens * self.cfg.moe.top_k)

    def _sort_by_expert(self, experts_NK: torch.Tensor, load_E: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """Order of the N*K (token, choice) pairs grouped by expert, and each group's size.

        The sort is stable, so with a capacity limit the earliest tokens keep their places.
        """
        order_M = experts_NK.flatten().argsort(stable=True)
        if self.cfg.router.capacity_factor is None:
            return order_M, load_E.tolist()
        capacity = math.ceil(self.cfg.router.capacity_factor * experts_NK.numel() / self.cfg.moe.num_experts)
        starts_E = load_E.cumsum(0) - load_E
        rank_M = torch.arange(order_M.numel(), device=order_M.device) - starts_E.repeat_interleave(load_E)
        return order_M[rank_M < capacity], load_E.clamp(max=capacity).tolist()

    @torch.no_grad()
    def update_bias(self) -> None:
        if self.cfg.router.bias_update_rate > 0:
            self.router.update_bias(self.load_since_update)
        self.load_since_update.zero_()

    def reset_parameters(self) -> None:
        self.router.reset_parameters()
        self.experts.reset_parameters()
        self.last_load.zero_()
        self.load_since_update.zero_()
