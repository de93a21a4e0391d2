"""Layers, attention, MoE and the transformer. Knows nothing of training, serving or files."""

from hepta.model.attention import KVCache
from hepta.model.mla import MLACache
from hepta.model.transformer import Transformer

__all__ = ["KVCache", "MLACache", "Transformer"]
