"""hepta: sparse Mixture-of-Experts language models, from a laptop to a GPU cluster."""

from hepta.checkpoint import build_model, save_model
from hepta.loading import load
from hepta.config import ModelConfig, count_params, get_preset, preset_names
from hepta.errors import HeptaError

__all__ = ["HeptaError", "ModelConfig", "build_model", "count_params", "get_preset", "load", "preset_names", "save_model"]
__version__ = "0.1.0"
