"""Hugging Face checkpoints in (`load_hf`, `HFTokenizer`) and out (`save_hf`)."""

from hepta.interop.hf_load import SUPPORTED_TYPES, config_from_hf, load_hf
from hepta.interop.hf_save import TARGET_TYPES, save_hf
from hepta.interop.hf_tokenizer import HFTokenizer

__all__ = ["HFTokenizer", "SUPPORTED_TYPES", "TARGET_TYPES", "config_from_hf", "load_hf", "save_hf"]
