"""Dry run of a planned training layout: the real model sharded by `train/parallel` over a fake
process group, one step measured under fake tensors (`measure.py`), with balanced routing
(`fake_routing.py`) active only inside it and GPU-like attention (`fake_attention.py`) set on the
dry run's own model."""
