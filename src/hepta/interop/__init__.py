"""Hugging Face checkpoints in (and, later, out)."""

from hepta.interop.hf_load import SUPPORTED_TYPES, config_from_hf, load_hf
from hepta.interop.hf_save import TARGET_TYPES, save
from hepta.interop.hf_tokenizer import HFTokenizer

__all__ = ["HFTokenizer", "SUPPORTED_TYPES", "TARGET_TYPES", "config_from_hf", "load_hf", "save"]
