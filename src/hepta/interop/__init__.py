"""Hugging Face checkpoints in (and, later, out)."""

from hepta.interop.hf_load import SUPPORTED_TYPES, config_from_hf, load_hf

__all__ = ["SUPPORTED_TYPES", "config_from_hf", "load_hf"]
