"""Top-k router: scores, (group-limited) expert selection, gate weights and router losses.

Dims: N tokens (B*T flattened), D model dim, E routed experts, K experts per token,
G expert groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from hepta.config import ModelConfig


@dataclass
class RouterLosses:
    """One forward's router losses, and what it takes to pool the balance loss with other forwards.

    The Switch balance loss E * sum_e f_e * P_e is linear in the mean probabilities P and f carries
    no gradient, so forwards pool exactly: sum their loads for f, token-weight their P. A step whose
    rows run as several batches then balances the whole draw, as one batch would, instead of each
    batch alone (which spreads a batch of one modality over every expert).
    """

    z: torch.Tensor  # coefficient-weighted z loss (a mean over the tokens)
    num_tokens: int
    load_E: torch.Tensor  # tokens sent to each expert
    mean_probs_E: torch.Tensor | None = None  # differentiable; None when the balance loss is off
    # the router's balance loss over a list of forwards; taken only when asked for, so a forward
    # that is pooled with others never pays (or all-reduces) for a balance of its own
    balance: Callable[[list["RouterLosses"]], torch.Tensor] | None = None

    @property
    def aux(self) -> torch.Tensor:
        """Coefficient-weighted balance loss of this forward alone (zero when it is off)."""
        if self.mean_probs_E is None or self.balance is None:
            return torch.zeros_like(self.z)
        return self.balance([self])

    @property
    def total(self) -> torch.Tensor:
        return self.aux + self.z


@dataclass
class Routing:
    weights_NK: torch.Tensor  # gate weight of each chosen expert (differentiable)
    experts_NK: torch.Tensor  # chosen expert ids
    losses: RouterLosses  # zero when both losses are off or no gradient is taken
    load_E: torch.Tensor  # tokens sent to each expert (before any capacity drop)


class Router(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty(cfg.moe.num_experts, cfg.dim))
        # gpt-oss learns a bias on the logits, which moves choice and gate weights alike
        self.bias = nn.Parameter(torch.zeros(cfg.moe.num_experts)) if cfg.router.logit_bias else None
        # Aux-loss-free balancing (DeepSeek-V3): the bias shifts which experts are selected but
        # never the gate weights, and it is updated from observed load, not by backprop.
        # It is persistent because it changes routing: a reloaded model must route the same.
        self.register_buffer("expert_bias", torch.zeros(cfg.moe.num_experts), persistent=True)
        # Data-parallel training sets this to a sum over ranks, so the aux loss sees the global
        # batch's load (as one process would) rather than each rank's share.
        self.reduce_load: Callable[[torch.Tensor], torch.Tensor] | None = None

    def forward(self, x_ND: torch.Tensor) -> Routing:
        cfg = self.cfg
        # Routing decisions are made in fp32 even under bf16 autocast: near-ties between experts
        # flip with bf16 rounding, and the softmax/sigmoid saturates early in low precision.
        with torch.autocast(x_ND.device.type, enabled=False):
            logits_NE = F.linear(x_ND.float(), self.weight.float(), None if self.bias is None else self.bias.float())
        if cfg.router.scoring == "softmax":
            scores_NE = logits_NE.softmax(dim=-1)
        else:
            scores_NE = logits_NE.sigmoid()

        choice_NE = scores_NE.detach() + self.expert_bias
        if cfg.router.num_limited_groups < cfg.router.num_expert_groups:
            choice_NE = self._limit_to_best_groups(choice_NE)
        experts_NK = choice_NE.topk(cfg.moe.top_k, dim=-1, sorted=False).indices
        weights_NK = scores_NE.gather(1, experts_NK)
        if cfg.router.norm_topk_prob:
            weights_NK = weights_NK / (weights_NK.sum(dim=-1, keepdim=True) + 1e-20)
        weights_NK = weights_NK * cfg.router.route_scale

        chosen_M = experts_NK.flatten()
        # bincount has no C++ shim for a compiled decode step's C++ wrapper; eager runs keep it, the op a dry run's
        # BalancedRouting (train/dryrun/fake_routing.py) gives a balanced load
        if torch.compiler.is_compiling():
            load_E = chosen_M.new_zeros(cfg.moe.num_experts).index_add_(0, chosen_M, torch.ones_like(chosen_M))
        else:
            load_E = torch.bincount(chosen_M, minlength=cfg.moe.num_experts)
        losses = RouterLosses(logits_NE.new_zeros(()), x_ND.shape[0], load_E)
        if not torch.is_grad_enabled():  # the losses only exist to be backpropagated
            return Routing(weights_NK, experts_NK, losses, load_E)
        if cfg.router.aux_loss_coef > 0:
            losses.mean_probs_E = (scores_NE / scores_NE.sum(dim=-1, keepdim=True)).mean(dim=0)
            losses.balance = self.balance_loss
        if cfg.router.z_loss_coef > 0:
            losses.z = cfg.router.z_loss_coef * torch.logsumexp(logits_NE, dim=-1).square().mean()
        return Routing(weights_NK, experts_NK, losses, load_E)

    def balance_loss(self, forwards: list[RouterLosses]) -> torch.Tensor:
        """Switch/GShard balance loss E * sum_e f_e * P_e over the tokens of `forwards` together,
        minimised by a uniform load."""
        load_E = torch.stack([f.load_E for f in forwards]).sum(dim=0)
        global_load_E = load_E if self.reduce_load is None else self.reduce_load(load_E)
        f_E = global_load_E.float() / global_load_E.sum()
        tokens = sum(f.num_tokens for f in forwards)
        probs_E = sum(f.mean_probs_E * (f.num_tokens / tokens) for f in forwards)
        return self.cfg.router.aux_loss_coef * self.cfg.moe.num_experts * (f_E * probs_E).sum()

    def pooled_loss(self, forwards: list[RouterLosses]) -> torch.Tensor:
        """The losses of `forwards` as if their tokens had been one batch."""
        tokens = sum(f.num_tokens for f in forwards)
        z = sum(f.z * (f.num_tokens / tokens) for f in forwards)
        if any(f.mean_probs_E is None for f in forwards):  # the balance loss is off
            return z
        return z + self.balance_loss(forwards)

    def _limit_to_best_groups(self, choice_NE: torch.Tensor) -> torch.Tensor:
        """Mask out all but the `num_limited_groups` best expert groups per token.

        A group scores as the sum of its two best experts with sigmoid routing (DeepSeek-V3)
        and as its best expert with softmax routing (DeepSeek-V2).
        """
        cfg = self.cfg
        N = choice_NE.shape[0]
        grouped_NGe = choice_NE.view(N, cfg.router.num_expert_groups, -1)
        if cfg.router.scoring == "sigmoid" and grouped_NGe.shape[-1] >= 2:
            group_score_NG = grouped_NGe.topk(2, dim=-1).values.sum(dim=-1)
        else:
            group_score_NG = grouped_NGe.amax(dim=-1)
        best_groups = group_score_NG.topk(cfg.router.num_limited_groups, dim=-1).indices
        keep_NG = torch.zeros_like(group_score_NG, dtype=torch.bool).scatter_(1, best_groups, True)
        return grouped_NGe.masked_fill(~keep_NG[..., None], float("-inf")).view(N, -1)

    @torch.no_grad()
    def update_bias(self, load_E: torch.Tensor) -> None:
        """Nudge under-loaded experts up and over-loaded ones down by a fixed step."""
        load_E = load_E.float()
        self.expert_bias += self.cfg.router.bias_update_rate * torch.sign(load_E.mean() - load_E)

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=0.02)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        self.expert_bias.zero_()
