"""The decoding cache: where a forward's new tokens go, which positions they take, what they see.

Attention layers only call `update`, `mask` and `has_past`; the transformer calls `positions`
before the layers and `advance` after them. A sliding-window layer asks `mask(window)` and sees
only the last `window` tokens; its keys are kept in full like every layer's (the window is
applied by the mask), so one slot layout serves every layer.

A fixed number of slots hold one sequence each, with its own length (continuous batching). A
forward runs on a window of consecutive slots: either a prefill of fresh slots (T new tokens
each, right-padded; the caller passes the real lengths) or one decode step (T = 1) per slot at
that slot's own position; or it continues one running slot with T tokens at once (`set_extend`:
the next chunk of a long prompt, prefilled a piece at a time between other sequences' steps); or
both at once (`set_packed`): one token for each running slot and a chunk for another slot, packed
as one sequence, so that every token-wise layer (projections, experts) runs over all of them in one
go and only attention goes part by part (`parts`, `enter`).

Each buffer is [L, slots, S_max, *token shape], the token shape being what one layer keeps per
token (`AttentionConfig.kv_cache_token_shapes`: keys and values [G, Dh], or MLA's latent [C] and
shared rope key [R]), so a layer's view of a window is [B, S, ...] whatever the attention. Only
softmax-attention layers have rows there; a linear-attention layer keeps a fixed-size state per
sequence instead (`states`, [L_linear, slots, *state shape] each), read and written through `state`.

Dims: B batch (window), T new tokens, S visible tokens, L layers, G KV heads, Dh head dim,
C MLA's KV latent dim (kv_lora_rank), R MLA's rope head dim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass
class PackedPart:
    """One part of a packed forward: which of its tokens (`tokens`), as `batch` slots of `new` tokens each, and the
    cache's window state for them (`SlotCache.enter`)."""

    tokens: slice
    batch: int
    new: int
    view: dict


def causal_mask(T: int, window: int | None, device: torch.device | str | None = None) -> torch.Tensor:
    """[T, T] bool, True where query i sees key j: j <= i, and with a window also j > i - window."""
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    visible = j <= i
    return visible if window is None else visible & (j > i - window)


class SlotCache:
    """Per-sequence lengths in fixed slots; forwards run on a window of consecutive slots.

    The engine keeps running sequences in the lowest slots (moving the last into a freed one),
    so a decode window is a view of the buffers, never a gather.
    """

    def __init__(self, num_layers: int, num_slots: int, max_len: int, token_shapes: Sequence[tuple[int, ...]],
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None, *,
                 kv_layers: Sequence[int] | None = None,
                 state_specs: Sequence[tuple[tuple[int, ...], torch.dtype]] = (), state_layers: Sequence[int] = ()):
        """kv_layers: the layers that keep keys and values per token (None: all); state_layers: those that keep
        one state per sequence instead, of the shapes and dtypes in state_specs."""
        kv_layers = range(num_layers) if kv_layers is None else kv_layers
        self._kv_row = {layer: row for row, layer in enumerate(kv_layers)}
        self._state_row = {layer: row for row, layer in enumerate(state_layers)}
        self.buffers = [torch.zeros((len(self._kv_row), num_slots, max_len, *shape), dtype=dtype, device=device)
                        for shape in token_shapes]
        self.states = [torch.zeros((len(self._state_row), num_slots, *shape), dtype=state_dtype, device=device)
                       for shape, state_dtype in state_specs] if state_layers else []
        self._num_slots, self._max_len = num_slots, max_len
        self.lengths = torch.zeros(num_slots, dtype=torch.long)  # on the CPU: the engine reads it every step
        # what each slot's RoPE position is ahead of (or behind) its length: multimodal RoPE gives an image
        # fewer positions than tokens, so the text after it continues from its own position
        self.rope_offsets = torch.zeros(num_slots, dtype=torch.long)
        self.start, self.count, self.decoding = 0, 0, False
        self._extend, self._extend_from = 0, 0  # a running slot continued with this many tokens (set_extend)
        self._prompt_lengths: torch.Tensor | None = None
        self._window_masks: dict[tuple, torch.Tensor] = {}  # per window (and prefill length) this step
        self.parts: list[PackedPart] = []  # a packed forward's parts (set_packed); empty otherwise

    @property
    def num_slots(self) -> int:
        return self._num_slots

    @property
    def max_len(self) -> int:
        return self._max_len

    @property
    def device(self) -> torch.device:
        return (self.buffers or self.states)[0].device

    def num_bytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in (*self.buffers, *self.states))

    def set_window(self, start: int, count: int, prompt_lengths: torch.Tensor | None = None) -> None:
        """The slots the next forward runs on: fresh ones (prefill) or running ones (decode).

        A prefill of right-padded prompts passes their real lengths: the slots then hold those,
        and the padding written past them is never attended.
        """
        assert 0 <= start and start + count <= self.num_slots
        self.parts = []
        self.start, self.count = start, count
        self._prompt_lengths = prompt_lengths
        self._extend = 0
        lengths = self.lengths[start:start + count]
        self.decoding = bool(lengths.gt(0).any())
        self._window_masks = {}
        assert not self.decoding or bool(lengths.gt(0).all()), "a window is all fresh or all running"
        if self.decoding:  # what every layer of this step needs: where each slot writes, and what it sees
            self._visible = int(lengths.max()) + 1
            assert self._visible <= self.max_len, "KV cache overflow; the engine bounds every sequence's length"
            self._positions_B = lengths.to(self.device, copy=True)  # lengths move on in advance()
            self._rows_B = torch.arange(start, start + count, device=self.device)
            visible_BS = torch.arange(self._visible, device=self.device)[None, :] <= self._positions_B[:, None]
            self._mask_B11S = visible_BS[:, None, None, :]  # [B, 1 (heads), 1 (new token), S]

    def set_extend(self, slot: int, num_tokens: int) -> None:
        """The next forward continues running slot `slot` with `num_tokens` tokens: they take the positions after
        its length and see all of it, and each other causally (softmax attention only)."""
        self.set_window(slot, 1)
        assert self.decoding, "only a running slot can be continued"
        assert self.lengths[slot] + num_tokens <= self.max_len, "KV cache overflow"
        self._extend = num_tokens
        self._extend_from = int(self.lengths[slot])

    def set_packed(self, decode_count: int, extends: Sequence[tuple[int, int]]) -> None:
        """The next forward is one packed sequence: a token for each running slot 0..decode_count-1 (none when 0),
        then for each (slot, n) of `extends`, n tokens continuing that slot (from its start when it holds nothing
        yet)."""
        parts, offset = [], 0
        if decode_count:
            self.set_window(0, decode_count)
            parts.append(PackedPart(slice(0, decode_count), decode_count, 1, self._view()))
            offset = decode_count
        for slot, tokens in extends:
            if self.lengths[slot] > 0:
                self.set_extend(slot, tokens)
            else:
                self.set_window(slot, 1, prompt_lengths=torch.tensor([tokens]))
            parts.append(PackedPart(slice(offset, offset + tokens), 1, tokens, self._view()))
            offset += tokens
        self.parts = parts

    _VIEW_FIELDS = ("start", "count", "decoding", "_extend", "_extend_from", "_prompt_lengths", "_window_masks",
                    "_visible", "_positions_B", "_rows_B", "_mask_B11S")

    def _view(self) -> dict:
        return {name: getattr(self, name) for name in self._VIEW_FIELDS if hasattr(self, name)}

    def enter(self, part: "PackedPart") -> None:
        """Makes `update`, `mask` and `positions` work on one part of a packed forward."""
        for name, value in part.view.items():
            setattr(self, name, value)

    @property
    def has_past(self) -> bool:
        return self.decoding

    def positions(self, T: int) -> torch.Tensor:
        """[T] for a prefill of fresh slots; [B, 1] (each slot's own position) when decoding; [T] for a packed
        forward, each token at its own slot's next position."""
        if self.parts:
            assert T == sum(part.batch * part.new for part in self.parts), "set_packed told another number of tokens"
            parts, self.parts = self.parts, []  # each part's positions as a plain window gives them
            try:
                found = []
                for part in parts:
                    self.enter(part)
                    found.append(self.positions(part.new).reshape(-1))
            finally:
                self.parts = parts
            return torch.cat(found)
        if not self.decoding:
            return torch.arange(T, device=self.device)
        if self._extend:
            assert T == self._extend, "set_extend told another number of tokens"
            offset = int(self.rope_offsets[self.start])
            return torch.arange(self._extend_from, self._extend_from + T, device=self.device) + offset
        assert T == 1, "a decode step adds one token per slot"
        offsets_B = self.rope_offsets[self.start:self.start + self.count].to(self.device)
        return (self._positions_B + offsets_B)[:, None]

    def set_rope_offsets(self, offsets_B: torch.Tensor) -> None:
        """A prefill's RoPE offsets, one per slot of the window (multimodal positions; see `rope_offsets`)."""
        self.rope_offsets[self.start:self.start + self.count] = offsets_B.cpu()

    @property
    def prompt_lengths(self) -> torch.Tensor | None:
        """In a prefill, each sequence's real length (None: all T tokens are real); what follows is padding."""
        return None if self.decoding else self._prompt_lengths

    def state(self, layer_idx: int) -> tuple[torch.Tensor, ...]:
        """A linear-attention layer's state of the window's sequences, [B, *state shape] per state, to read
        (decoding) and write in place; a prefill writes it whole."""
        row, s, e = self._state_row[layer_idx], self.start, self.start + self.count
        return tuple(state[row, s:e] for state in self.states)

    def update(self, layer_idx: int, *new_BT: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Writes the window's new tokens, [B, T, ...] per buffer; returns what they attend to, [B, S, ...] each."""
        row = self._kv_row[layer_idx]  # its row among the layers that keep keys and values
        s, e = self.start, self.start + self.count
        if self._extend:
            end = self._extend_from + self._extend
            for buffer, values_BT in zip(self.buffers, new_BT):
                buffer[row, s, self._extend_from:end].copy_(values_BT[0])
            return tuple(buffer[row, s:e, :end] for buffer in self.buffers)
        if not self.decoding:
            T = new_BT[0].shape[1]
            self._prefill_len = T
            assert T <= self.max_len
            for buffer, values_BT in zip(self.buffers, new_BT):
                buffer[row, s:e, :T].copy_(values_BT)
            return tuple(buffer[row, s:e, :T] for buffer in self.buffers)
        for buffer, values_B1 in zip(self.buffers, new_BT):
            buffer[row][self._rows_B, self._positions_B] = values_B1[:, 0]  # one token per (slot, position)
        return tuple(buffer[row, s:e, :self._visible] for buffer in self.buffers)

    def kv_row(self, layer_idx: int) -> int:
        """The row of layer `layer_idx` in `buffers` (its index among the layers that keep keys and values)."""
        return self._kv_row[layer_idx]

    def decode_targets(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """For a plain decode window (a token each running slot; no packed parts, no continuation): the slots
        (`start`..), each one's next position, and what its token sees ([B, 1, 1, S] over the window's longest
        sequence), for a compiled step that writes the buffers itself; None for any other forward."""
        if not self.decoding or self.parts or self._extend:
            return None
        return self._rows_B, self._positions_B, self._mask_B11S

    def mask(self, window: int | None = None) -> tuple[torch.Tensor | None, bool]:
        """(attn_mask, is_causal) for the window's new tokens over what `update` returned; a sliding-window
        layer passes its window and sees only that many latest tokens (itself included)."""
        if self._extend:  # query i (position from + i) sees keys up to its own position
            key = (window, "extend")
            if key not in self._window_masks:
                query_T1 = torch.arange(self._extend, device=self.device)[:, None] + self._extend_from
                key_1S = torch.arange(self._extend_from + self._extend, device=self.device)[None, :]
                visible = key_1S <= query_T1
                self._window_masks[key] = visible if window is None else visible & (key_1S > query_T1 - window)
            return self._window_masks[key], False
        if window is None:
            # fresh slots: plain causal; right padding only ever sees real tokens before it
            return (self._mask_B11S, False) if self.decoding else (None, True)
        key = (window, -1 if self.decoding else self._prefill_len)
        if key not in self._window_masks:  # built by the first layer with this window, reused by the rest
            if self.decoding:
                recent_BS = torch.arange(self._visible, device=self.device)[None, :] > self._positions_B[:, None] - window
                self._window_masks[key] = self._mask_B11S & recent_BS[:, None, None, :]
            else:
                self._window_masks[key] = causal_mask(self._prefill_len, window, self.device)
        return self._window_masks[key], False

    def advance(self, num_tokens: int) -> None:
        if self.parts:
            parts, self.parts = self.parts, []
            for part in parts:
                self.enter(part)
                self.advance(part.new)
            return
        window = self.lengths[self.start:self.start + self.count]
        if self._prompt_lengths is not None and not self.decoding:
            window.copy_(self._prompt_lengths)
        else:
            window += num_tokens

    def move(self, src: int, dst: int) -> None:
        """Copy slot `src` (its whole sequence) into slot `dst`."""
        for buffer in (*self.buffers, *self.states):
            buffer[:, dst].copy_(buffer[:, src])
        self.lengths[dst] = self.lengths[src]
        self.rope_offsets[dst] = self.rope_offsets[src]

    def release(self, slot: int) -> None:
        self.lengths[slot] = 0
        self.rope_offsets[slot] = 0
