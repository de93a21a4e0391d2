"""`ModelConfig`: the trunk of a hepta model and its sections, with their serialisation.

The trunk (vocabulary, width, depth, context, norms) stays at the top level because every layer
reads it; what only one part of the model reads lives in that part's section: `attention`
(including MLA's ranks), `rope`, `moe` (which layers route, to what experts) and `router`;
`codes` says how much of the vocabulary is image and audio codes.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from hepta.config.flat_v1 import FLAT_TO_DOTTED, is_flat_v1
from hepta.config.sections import SECTIONS, AttentionConfig, CodesConfig, MoEConfig, RopeConfig, RouterConfig, Section
from hepta.config.typed import check_types, require


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 4096
    dim: int = 256
    num_layers: int = 4
    max_seq_len: int = 1024
    tie_embeddings: bool = False
    norm_eps: float = 1e-6
    zero_centered_norms: bool = False  # RMSNorm weights are stored around 0 and scale by (1 + weight) (Qwen3.5)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    rope: RopeConfig = field(default_factory=RopeConfig)
    moe: MoEConfig = field(default_factory=MoEConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    codes: CodesConfig = field(default_factory=CodesConfig)

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("vocab_size", "dim", "num_layers", "max_seq_len"):
            require(getattr(self, name) > 0, self, name, "it must be a positive integer")
        require(self.codes.image + self.codes.audio < self.vocab_size, self.codes, "image",
                f"the image and audio code blocks must leave room for text in vocab_size={self.vocab_size}")
        require(self.norm_eps > 0, self, "norm_eps", "it must be positive")
        moe, router = self.moe, self.router
        require(moe.num_dense_layers <= self.num_layers, moe, "num_dense_layers",
                f"it must be between 0 and num_layers={self.num_layers}")
        require(all(i < self.num_layers for i in moe.dense_layers), moe, "dense_layers",
                f"it must list layer indices below num_layers={self.num_layers}")
        for name in ("sliding_window_layers", "linear_layers"):
            require(all(i < self.num_layers for i in getattr(self.attention, name)), self.attention, name,
                    f"it must list layer indices below num_layers={self.num_layers}")
        require(self.num_moe_layers == self.num_layers or moe.dense_hidden_dim > 0, moe, "dense_hidden_dim",
                "dense layers need a positive hidden size")
        if not self.has_moe:
            return
        require(moe.num_experts % router.num_expert_groups == 0, router, "num_expert_groups",
                f"it must divide moe.num_experts={moe.num_experts}")
        require(moe.top_k <= router.num_limited_groups * moe.num_experts // router.num_expert_groups, moe, "top_k",
                f"the eligible groups (router.num_limited_groups={router.num_limited_groups} of "
                f"{router.num_expert_groups}) must hold at least top_k experts")

    # --- derived ---
    @property
    def has_moe(self) -> bool:
        return self.num_moe_layers > 0

    @property
    def num_moe_layers(self) -> int:
        return sum(self.is_moe_layer(i) for i in range(self.num_layers))

    @property
    def softmax_attention_layers(self) -> tuple[int, ...]:
        """The layers with softmax attention, the ones that keep keys and values per token."""
        return tuple(i for i in range(self.num_layers) if i not in self.attention.linear_layers)

    def is_moe_layer(self, layer_idx: int) -> bool:
        moe = self.moe
        return (layer_idx >= moe.num_dense_layers and layer_idx not in moe.dense_layers
                and (layer_idx + 1) % moe.layer_step == 0)

    # --- fields by name ---
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Every settable name: trunk fields, then `section.field` for each section's fields."""
        return _FIELD_NAMES

    def get(self, name: str) -> object:
        """The value of a field by its name: `cfg.get("moe.num_experts")`."""
        if name not in _FIELD_NAMES:
            raise KeyError(name)
        value = self
        for part in name.split("."):
            value = getattr(value, part)
        return value

    # --- changes ---
    def replace(self, **changes) -> "ModelConfig":
        """A copy with trunk fields and sections changed; a section takes a section or a dict of its changes:
        `cfg.replace(num_layers=2, moe={"num_experts": 16})`."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s) {sorted(unknown)}; known fields: "
                             f"{[f.name for f in dataclasses.fields(self)]}")
        for name, value in changes.items():
            if name in SECTIONS and isinstance(value, Mapping):
                changes[name] = getattr(self, name).replace(**value)
        return dataclasses.replace(self, **changes)

    def with_changes(self, changes: Mapping[str, object]) -> "ModelConfig":
        """A copy with fields changed by name: `{"moe.num_experts": 16, "num_layers": 2}`.

        The flat names of the first config.json format (`num_experts`, `rope_theta`) are taken too;
        `hepta train --set` passes its KEY=VALUE pairs here.
        """
        by_section: dict[str, dict[str, object]] = {}
        given_as: dict[str, str] = {}
        for key, value in changes.items():
            name = FLAT_TO_DOTTED.get(key, key)
            section, _, field_name = name.rpartition(".")
            if name not in _FIELD_NAMES:
                raise ValueError(f"unknown ModelConfig field {key!r}; {_fix_for_unknown(key)}")
            if name in given_as:
                raise ValueError(f"{given_as[name]!r} and {key!r} both set ModelConfig.{name}; keep one of them")
            given_as[name] = key
            if section:
                by_section.setdefault(section, {})[field_name] = value
            else:
                by_section.setdefault("", {})[name] = value
        return self.replace(**by_section.pop("", {}), **by_section)

    # --- serialisation ---
    def to_dict(self) -> dict:
        return {"model_type": "hepta", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        """From config.json: the sectioned format this class writes, or the flat one of earlier hepta."""
        data = {k: v for k, v in data.items() if k != "model_type"}
        if is_flat_v1(data):
            unknown = sorted(set(data) - set(FLAT_TO_DOTTED))
            changes = data
        else:
            changes, unknown = {}, []
            for key, value in data.items():
                if key in SECTIONS and isinstance(value, dict):
                    changes.update({f"{key}.{name}": v for name, v in value.items()})
                else:
                    changes[key] = value
            unknown = sorted(set(changes) - set(_FIELD_NAMES))
        if unknown:
            raise ValueError(f"config.json has field(s) {unknown} that no hepta config has; remove or rename "
                             f"them ({ALL_FIELDS_HINT})")
        return cls().with_changes(changes)

    def save(self, path: str | Path) -> None:
        from hepta.fileio import atomic_write_text
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")


def _field_names() -> tuple[str, ...]:
    """Every settable name: trunk fields, then `section.field` for each section's fields."""
    names = []
    for f in dataclasses.fields(ModelConfig):
        section: type[Section] | None = SECTIONS.get(f.name)
        names += [f"{f.name}.{g.name}" for g in dataclasses.fields(section)] if section else [f.name]
    return tuple(names)


_FIELD_NAMES = _field_names()
ALL_FIELDS_HINT = 'every field is under "config" in `hepta info tiny --json`'


def _fix_for_unknown(key: str) -> str:
    """The fix for an unknown field name: the closest field names, and where every name is listed."""
    # flat names of the first format count as their dotted field, so `num_expert` finds moe.num_experts
    candidates = {**FLAT_TO_DOTTED, **{name: name for name in _FIELD_NAMES}}
    close = dict.fromkeys(candidates[match] for match in difflib.get_close_matches(key, candidates, n=3))
    if not close:
        return f"use a ModelConfig field name ({ALL_FIELDS_HINT})"
    return f"the closest fields are {', '.join(close)} ({ALL_FIELDS_HINT})"
