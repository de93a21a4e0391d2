"""Layers, attention, MoE and the transformer. Knows nothing of training, serving or files."""

from hepta.model.cache import SlotCache
from hepta.model.transformer import Transformer

__all__ = ["SlotCache", "Transformer"]
