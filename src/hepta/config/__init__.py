"""Model configuration, named presets and exact parameter accounting.

One frozen `ModelConfig` describes every hepta model, from the laptop-sized `tiny` to the
7-trillion-parameter `grok5-7t`: trunk fields at the top, the rest in sections (`attention`,
`rope`, `moe`, `router`). `param_shapes` lists every parameter the model holds; `count_params`
sums it into total and active parameters, and the built model is checked against it.
"""

from hepta.config.model_config import ModelConfig
from hepta.config.param_shapes import (COMPONENTS, ParamCount, ParamShape, count_params, layer_param_shapes,
                                       outer_param_shapes, param_shapes)
from hepta.config.presets import get_preset, preset, preset_names
from hepta.config.sections import (ATTENTIONS, ROPE_TYPES, ROUTER_SCORINGS, AttentionConfig, MoEConfig, RopeConfig,
                                   RouterConfig)

__all__ = ["ATTENTIONS", "COMPONENTS", "ROPE_TYPES", "ROUTER_SCORINGS", "AttentionConfig", "ModelConfig", "MoEConfig",
           "ParamCount", "ParamShape", "RopeConfig", "RouterConfig", "count_params", "get_preset", "layer_param_shapes",
           "outer_param_shapes", "param_shapes", "preset", "preset_names"]
