"""Token id lists of different lengths as one right-padded batch.

Dims: B sequences, T longest length.
"""

from __future__ import annotations

import torch


def pad_right(sequences: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [B, T] padded with pad_id after each sequence, lengths [B]).

    Causal attention never lets a real token see the padding after it, so any pad id works.
    """
    lengths_B = torch.tensor([len(ids) for ids in sequences])
    ids_BT = torch.full((len(sequences), int(lengths_B.max())), pad_id, dtype=torch.long)
    for row, ids in enumerate(sequences):
        ids_BT[row, :len(ids)] = torch.tensor(ids)
    return ids_BT, lengths_B
