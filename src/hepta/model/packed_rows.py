"""Rows of different lengths in one training forward, with no padding.

A step's conversations differ in length (a 35-token digit question beside a 400-token utterance), and a
padded batch spends its projections, norms and experts on positions that no loss reads. Packed, the rows'
real tokens lie end to end as one sequence [1, N]: everything but attention runs over those N tokens alone.
Attention must not look across rows, so it runs group by group (the padded batches the rows came in), each
group's rows gathered back into [B, T] for that one call. It is causal, so a row's real tokens never see the
padding after them, and the padding's own outputs are dropped.

The logits at the real positions are those of the padded batches (tests/model/test_packed_rows.py); what
changes is that the experts' router no longer sees padding, so the balancing statistics count real tokens only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PackedRows:
    positions_N: torch.Tensor  # int64 [N]: each token's position in its own row, from 0
    gathers: tuple[torch.Tensor, ...]  # per group, int64 [B, T]: where each row's positions lie in N
    keeps: tuple[torch.Tensor, ...]  # per group, bool [B, T]: the row's real tokens (the rest repeat its last)

    @classmethod
    def pack(cls, batches: list[tuple[torch.Tensor, torch.Tensor]],
             pad_id: int) -> tuple[torch.Tensor, torch.Tensor, PackedRows]:
        """Inputs [1, N], targets [1, N] and the packing of right-padded batches of (inputs [B, T], targets [B, T]),
        whose padding is `pad_id` in the inputs: the real tokens of every row, batch after batch, row after row."""
        inputs, targets, positions, gathers, keeps, offset = [], [], [], [], [], 0
        for x_BT, y_BT in batches:
            keep_BT = x_BT != pad_id
            lengths_B, steps_T = keep_BT.sum(1), torch.arange(x_BT.shape[1])
            if bool((lengths_B == 0).any()) or not torch.equal(keep_BT, steps_T < lengths_B[:, None]):
                raise ValueError("packed rows must be right-padded and hold at least one real token each")
            starts_B = offset + torch.cumsum(lengths_B, 0) - lengths_B
            steps_BT = torch.minimum(steps_T, lengths_B[:, None] - 1)
            gathers.append(starts_B[:, None] + steps_BT)
            keeps.append(keep_BT)
            inputs.append(x_BT[keep_BT])
            targets.append(y_BT[keep_BT])
            positions.append(steps_BT[keep_BT])
            offset += int(lengths_B.sum())
        return (torch.cat(inputs)[None], torch.cat(targets)[None],
                cls(torch.cat(positions), tuple(gathers), tuple(keeps)))

    def to(self, device: torch.device) -> PackedRows:
        return PackedRows(self.positions_N.to(device), tuple(g.to(device) for g in self.gathers),
                          tuple(k.to(device) for k in self.keeps))

    def attend(self, attend_rows: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
               q_1HNDh: torch.Tensor, k_1GNDh: torch.Tensor, v_1NGDh: torch.Tensor) -> torch.Tensor:
        """Attention of the packed tokens, each over its own row only: [1, N, H, Dh]. `attend_rows` is causal
        attention over padded rows, taking [B, H, T, Dh] queries, [B, G, T, Dh] keys and [B, T, G, Dh] values and
        returning [B, H, T, Dh]."""
        outs = []
        for gather_BT, keep_BT in zip(self.gathers, self.keeps):
            q_BHTDh = q_1HNDh[0][:, gather_BT].transpose(0, 1)
            k_BGTDh = k_1GNDh[0][:, gather_BT].transpose(0, 1)
            out_BHTDh = attend_rows(q_BHTDh, k_BGTDh, v_1NGDh[0][gather_BT])
            outs.append(out_BHTDh.transpose(1, 2)[keep_BT])  # [its tokens, H, Dh], in packed order
        return torch.cat(outs)[None]
