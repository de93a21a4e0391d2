"""Which experts text, image and audio tokens choose, per MoE layer: the per-modality expert load.

Counted from each forward's routing (`MoE.last_experts_NK`), split by the input ids: image codes
and markers are image tokens, audio codes and markers audio tokens, padding is nothing, the rest
is text. It is how a user sees whether experts specialise by modality.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist

from hepta.model import Transformer

# name -> which ids of a flat id tensor belong to that modality
ModalityMasks = dict[str, Callable[[torch.Tensor], torch.Tensor]]


class ModalityLoad:
    def __init__(self, masks: ModalityMasks):
        self.names = ["text", *masks]
        self.masks = masks
        self.counts_MLE: torch.Tensor | None = None  # [modality (text first), MoE layer, expert]

    def add(self, model: Transformer, ids_BT: torch.Tensor, pad_id: int | None = None) -> None:
        if not self.masks:
            return
        ids_N = ids_BT.flatten().cpu()
        valid_N = ids_N != pad_id if pad_id is not None else torch.ones_like(ids_N, dtype=torch.bool)
        others = [mask(ids_N) & valid_N for mask in self.masks.values()]
        text_N = valid_N.clone()
        for mask_N in others:
            text_N &= ~mask_N
        layers = list(model.moe_layers())
        if not layers:
            return
        num_experts = layers[0].cfg.moe.num_experts
        counts = torch.zeros(len(self.names), len(layers), num_experts, dtype=torch.long)
        for layer, moe in enumerate(layers):
            experts_NK = moe.last_experts_NK.cpu()
            for modality, mask_N in enumerate([text_N, *others]):
                counts[modality, layer] = torch.bincount(experts_NK[mask_N].flatten(), minlength=num_experts)
        self.counts_MLE = counts if self.counts_MLE is None else self.counts_MLE + counts

    @property
    def has_other_modalities(self) -> bool:
        return self.counts_MLE is not None and bool(self.counts_MLE[1:].sum())

    def shares(self, group=None) -> dict[str, list[list[int]]]:
        """Tokens routed to each expert, per modality and layer, summed over the processes of `group`."""
        counts = self.counts_MLE.clone()
        if group is not None:
            device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
            counts = counts.to(device)
            dist.all_reduce(counts, group=group)
        return {name: counts[m].tolist() for m, name in enumerate(self.names)}
