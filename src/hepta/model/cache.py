"""Decoding caches: where a forward's new tokens go, which positions they take, what they see.

Attention layers only call `update`, `mask` and `has_past`; the transformer calls `positions`
before the layers and `advance` after them. Two layouts share that contract:

- `UniformCache`: every sequence of the batch has the same length (generation of one prompt,
  or a batch of equal-length prompts).
- `SlotCache`: a fixed number of slots, one sequence each with its own length, for continuous
  batching. A forward runs on a window of consecutive slots: either a prefill of fresh slots
  (T new tokens each, right-padded; the engine sets the real lengths afterwards) or one decode
  step (T = 1) per slot at that slot's own position.

Each cache holds a list of buffers [L, B or slots, ...] with the sequence at `seq_dim` of the
per-layer view (keys/values [B, G, S, Dh]: dim 2; MLA latents [B, S, C]: dim 1).

Dims: B batch (window), T new tokens, S visible tokens, L layers.
"""

from __future__ import annotations

import torch


def causal_mask(T: int, S: int, past: int, device: torch.device) -> tuple[torch.Tensor | None, bool]:
    """(attn_mask, is_causal) for T new tokens after `past` cached ones, S = past + T keys."""
    if past == 0:
        return None, True
    if T == 1:
        return None, False  # one new token sees every cached token
    # new token i sits at position past + i and sees keys 0..past + i
    mask = torch.arange(S, device=device)[None, :] <= (past + torch.arange(T, device=device))[:, None]
    return mask, False


class UniformCache:
    """Preallocated buffers in which all sequences share one length, advanced once per forward."""

    def __init__(self, buffers: list[torch.Tensor], seq_dim: int):
        self.buffers, self.seq_dim = buffers, seq_dim
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.buffers[0].shape[self.seq_dim + 1]

    @property
    def has_past(self) -> bool:
        return self.length > 0

    def positions(self, T: int) -> torch.Tensor:
        return torch.arange(self.length, self.length + T, device=self.buffers[0].device)

    def update(self, layer_idx: int, *new: torch.Tensor) -> tuple[torch.Tensor, ...]:
        end = self.length + new[0].shape[self.seq_dim]
        assert end <= self.max_len, "KV cache overflow; the caller checks lengths first"
        out = []
        for buffer, values in zip(self.buffers, new):
            layer = buffer[layer_idx]
            layer.narrow(self.seq_dim, self.length, end - self.length).copy_(values)
            out.append(layer.narrow(self.seq_dim, 0, end))
        return tuple(out)

    def mask(self, T: int, S: int) -> tuple[torch.Tensor | None, bool]:
        return causal_mask(T, S, self.length, self.buffers[0].device)

    def advance(self, num_tokens: int) -> None:
        self.length += num_tokens


class SlotCache:
    """Per-sequence lengths in fixed slots; forwards run on a window of consecutive slots.

    The engine keeps running sequences in the lowest slots (moving the last into a freed one),
    so a decode window is a view of the buffers, never a gather.
    """

    def __init__(self, buffers: list[torch.Tensor], seq_dim: int):
        self.buffers, self.seq_dim = buffers, seq_dim
        self.lengths = torch.zeros(buffers[0].shape[1], dtype=torch.long)
        self.start, self.count, self.decoding = 0, 0, False
        self._prompt_lengths: torch.Tensor | None = None

    @property
    def num_slots(self) -> int:
        return self.buffers[0].shape[1]

    @property
    def max_len(self) -> int:
        return self.buffers[0].shape[self.seq_dim + 1]

    def num_bytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers)

    def set_window(self, start: int, count: int, prompt_lengths: torch.Tensor | None = None) -> None:
        """The slots the next forward runs on: fresh ones (prefill) or running ones (decode).

        A prefill of right-padded prompts passes their real lengths: the slots then hold those,
        and the padding written past them is never attended.
        """
        assert 0 <= start and start + count <= self.num_slots
        self.start, self.count = start, count
        self._prompt_lengths = prompt_lengths
        lengths = self.lengths[start:start + count]
        self.decoding = bool(lengths.gt(0).any())
        assert not self.decoding or bool(lengths.gt(0).all()), "a window is all fresh or all running"
        if self.decoding:  # what every layer of this step needs: where each slot writes, and what it sees
            self._positions_B = lengths.clone()
            self._visible = int(self._positions_B.max()) + 1
            assert self._visible <= self.max_len, "KV cache overflow; the engine bounds every sequence's length"
            self._rows_B = torch.arange(start, start + count)
            visible_BS = torch.arange(self._visible)[None, :] <= self._positions_B[:, None]
            self._mask_B11S = visible_BS[:, None, None, :]  # [B, 1 (heads), 1 (new token), S]

    @property
    def has_past(self) -> bool:
        return self.decoding

    def positions(self, T: int) -> torch.Tensor:
        """[T] for a prefill of fresh slots; [B, 1] (each slot's own position) when decoding."""
        if not self.decoding:
            return torch.arange(T)
        assert T == 1, "a decode step adds one token per slot"
        return self._positions_B[:, None]

    def update(self, layer_idx: int, *new: torch.Tensor) -> tuple[torch.Tensor, ...]:
        s, e, d = self.start, self.start + self.count, self.seq_dim
        if not self.decoding:
            T = new[0].shape[d]
            assert T <= self.max_len
            for buffer, values in zip(self.buffers, new):
                buffer[layer_idx, s:e].narrow(d, 0, T).copy_(values)
            return tuple(buffer[layer_idx, s:e].narrow(d, 0, T) for buffer in self.buffers)
        for buffer, values in zip(self.buffers, new):
            # put the sequence dim next to the slot dim, then write one token per (slot, position)
            buffer[layer_idx].movedim(d, 1)[self._rows_B, self._positions_B] = values.movedim(d, 1)[:, 0]
        return tuple(buffer[layer_idx, s:e].narrow(d, 0, self._visible) for buffer in self.buffers)

    def mask(self, T: int, S: int) -> tuple[torch.Tensor | None, bool]:
        if not self.decoding:
            return None, True  # fresh slots: plain causal; right padding only ever sees real tokens before it
        return self._mask_B11S, False

    def advance(self, num_tokens: int) -> None:
        window = self.lengths[self.start:self.start + self.count]
        if self._prompt_lengths is not None and not self.decoding:
            window.copy_(self._prompt_lengths)
        else:
            window += num_tokens

    def move(self, src: int, dst: int) -> None:
        """Copy slot `src` (its whole sequence) into slot `dst`."""
        for buffer in self.buffers:
            buffer[:, dst].copy_(buffer[:, src])
        self.lengths[dst] = self.lengths[src]

    def release(self, slot: int) -> None:
        self.lengths[slot] = 0
