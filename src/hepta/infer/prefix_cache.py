"""Prompt prefixes already computed, kept so that a shared system prompt or a conversation's history is not
prefilled again.

The keys and values a prefill writes depend only on the tokens before them, so the cache rows of a prompt's first
tokens serve any later prompt that starts with the same tokens. They are kept in blocks of `block` tokens (as vLLM's
automatic prefix caching does), each found by its tokens and the block before it, so a lookup walks a new prompt
block by block and stops at the first block not kept. A hit is copied into the new sequence's slot (a memory copy,
far cheaper than the forward that made it) and only the rest of the prompt is prefilled, continuing that slot.

Their memory is taken once, at start, as a pool of blocks beside the slots (like the slots' own memory, so a budget
that does not fit fails at start, never hours later). Blocks leave least recently used first; a hit makes its
blocks the most recent, the earlier blocks last, so a block never outlives the ones before it for long (a block
whose parent is gone can never be reached again, and simply ages out).

Only for softmax attention: a linear-attention layer's state summarises the whole prefix and has no rows to copy.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass

from hepta.model.cache import SlotCache


@dataclass
class _Block:
    id: int
    index: int  # its place in the pool


class PrefixCache:
    def __init__(self, cache: SlotCache, capacity_bytes: int, block: int = 32):
        """Keeps at most `capacity_bytes` of cache rows, in blocks of `block` tokens, copied from `cache`'s slots."""
        self.cache, self.block = cache, block
        self.capacity_blocks = max(0, capacity_bytes // (self.bytes_per_token() * block))
        # per cache buffer, [L_kv, capacity_blocks, block, *token shape]
        self.pool = [buffer.new_empty((buffer.shape[0], self.capacity_blocks, block, *buffer.shape[3:]))
                     for buffer in cache.buffers]
        self._free = list(range(self.capacity_blocks))
        # (the previous block's id, or 0 at the start; this block's token ids) -> where its rows are
        self._blocks: OrderedDict[tuple[int, tuple[int, ...]], _Block] = OrderedDict()
        self._ids = itertools.count(1)
        self.hit_tokens = 0  # prompt tokens served from here, over the cache's life (for metrics)

    @property
    def num_tokens(self) -> int:
        return len(self._blocks) * self.block

    def bytes_per_token(self) -> int:
        return sum(b[:, 0, 0].numel() * b.element_size() for b in self.cache.buffers)

    def num_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.pool)

    def lookup(self, ids: list[int]) -> list[tuple[int, tuple[int, ...]]]:
        """The keys of the longest run of kept blocks that starts `ids`, leaving at least its last token to prefill
        (its logits give the first token)."""
        keys, parent = [], 0
        for start in range(0, len(ids) - self.block, self.block):  # whole blocks before the last token
            key = (parent, tuple(ids[start:start + self.block]))
            found = self._blocks.get(key)
            if found is None:
                break
            keys.append(key)
            parent = found.id
        return keys

    def load(self, keys: list[tuple[int, tuple[int, ...]]], slot: int) -> int:
        """Copies the blocks of `keys` into `slot` as its first tokens; returns how many tokens that is."""
        for i, key in enumerate(keys):
            start = i * self.block
            index = self._blocks[key].index
            for buffer, pool in zip(self.cache.buffers, self.pool):
                buffer[:, slot, start:start + self.block].copy_(pool[:, index])
        for key in reversed(keys):  # the most recent, and the first block the most recent of all
            self._blocks.move_to_end(key)
        tokens = len(keys) * self.block
        self.cache.lengths[slot] = tokens
        self.cache.rope_offsets[slot] = 0
        self.hit_tokens += tokens
        return tokens

    def store(self, ids: list[int], slot: int) -> None:
        """Keeps the whole blocks of `ids`, whose keys and values `slot` holds, that are not kept yet (at most the
        budget's worth, from the start)."""
        chain, parent = [], 0
        for start in range(0, min(len(ids) // self.block, self.capacity_blocks) * self.block, self.block):
            key = (parent, tuple(ids[start:start + self.block]))
            found = self._blocks.get(key)
            if found is None:
                if not self._free:
                    # the oldest is never one of this chain: each of those was just made more recent than the rest
                    self._free.append(self._blocks.popitem(last=False)[1].index)
                index = self._free.pop()
                for buffer, pool in zip(self.cache.buffers, self.pool):
                    pool[:, index].copy_(buffer[:, slot, start:start + self.block])
                found = self._blocks[key] = _Block(next(self._ids), index)
            else:
                self._blocks.move_to_end(key)
            chain.append(key)
            parent = found.id
        for key in reversed(chain):  # earlier blocks outlive later ones
            self._blocks.move_to_end(key)
