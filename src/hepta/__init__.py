"""hepta: sparse Mixture-of-Experts language models, from a laptop to a GPU cluster.

The names below load on first use, so `hepta.live` (the post pipeline) and the CLI's light
commands run without importing torch.
"""

from importlib import import_module

from hepta.errors import HeptaError

_LAZY = {
    "build_model": "hepta.checkpoint",
    "save_model": "hepta.checkpoint",
    "load": "hepta.loading",
    "load_tokenizer": "hepta.loading",
    "load_image_codec": "hepta.loading",
    "ModelConfig": "hepta.config",
    "count_params": "hepta.config",
    "get_preset": "hepta.config",
    "preset_names": "hepta.config",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hepta' has no attribute {name!r}")


__all__ = ["HeptaError", *_LAZY]
__version__ = "0.1.0"
