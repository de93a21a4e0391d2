"""Inference: sampling and decoding with the KV cache."""
