"""Qwen3-Omni-MoE's thinker hearing: speech clips into its prompt through its own audio tower.

The thinker's language model is Qwen3-MoE's decoder and loads into hepta like one (`hf_load`); this
module gives it its ears. The audio tower is transformers' own `Qwen3OmniMoeAudioEncoder`, built from
`audio_config` and filled with the folder's `audio_tower.*` weights (under `thinker.` in a complete
Qwen3-Omni folder): it runs standalone, as Qwen3-VL's vision tower does (`qwen3_vl.py`). Clips become
log-mel features with transformers' Whisper feature extractor (numpy, 16 kHz), as Qwen3-Omni's
processor makes them, and each `<|audio_pad|>` the chat template writes grows to the clip's length
in audio tokens.

Audio and text share plain positions (the thinker's multimodal RoPE gives audio the positions text
would have; only images and videos would move them), so a prompt with speech decodes like text.
Images and videos would need the thinker's own vision encoder and its time-scaled positions; hepta
does not read them for this type (`serve/vision_parts.py` refuses them by name).

Dims: M mel bins, F feature frames (100 per second), N audio tokens, D the language model's width.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from hepta.errors import HeptaError
from hepta.model.transformer import VisualInput

TYPES = ("qwen3_omni_moe", "qwen3_omni_moe_thinker")
AUDIO_PAD = "<|audio_pad|>"
SAMPLE_RATE = 16000


def thinker_config(hf: dict) -> dict:
    """The thinker's config: a complete Qwen3-Omni config.json nests it in thinker_config."""
    return hf["thinker_config"] if hf.get("model_type") == "qwen3_omni_moe" else hf


def text_config(hf: dict) -> dict:
    """The thinker's language model config, as the qwen3_moe fields hepta maps."""
    thinker = thinker_config(hf)
    text = dict(thinker["text_config"])
    return {**text, "model_type": hf["model_type"],
            "tie_word_embeddings": thinker.get("tie_word_embeddings", text.get("tie_word_embeddings", False)),
            "quantization_config": hf.get("quantization_config")}


def language_model_name(name: str) -> str | None:
    """A weight's name in the language model (model.*, lm_head.*), or None for the other towers and the talker."""
    name = name.removeprefix("thinker.")
    return name if name.startswith(("model.", "lm_head.")) else None


def audio_tokens(frames: int, n_window: int) -> int:
    """Audio tokens of a clip of `frames` feature frames: the tower runs three stride-2 convolutions over each
    chunk of 2 x n_window frames (a whole chunk of the released 100 frames gives 13), then the rest."""

    def after_convolutions(length: int) -> int:
        for _ in range(3):
            length = (length - 1) // 2 + 1
        return length

    chunk = 2 * n_window
    rest = frames % chunk
    return (frames // chunk) * after_convolutions(chunk) + (after_convolutions(rest) if rest else 0)


@dataclass
class AudioItem:
    """One clip, ready for the audio tower."""

    features_MF: torch.Tensor
    tokens: int


class Qwen3OmniAudio:
    """The audio tower and feature extractor of one Qwen3-Omni folder; an engine's `vision` for its prefills."""

    def __init__(self, folder: str | Path, dtype: torch.dtype | None = None, with_tower: bool = True,
                 device: torch.device | str = "cpu"):
        try:
            from transformers import WhisperFeatureExtractor
            from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeAudioEncoderConfig
            from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import Qwen3OmniMoeAudioEncoder
        except ImportError as e:
            from hepta.interop.qwen3_vl import missing_transformers

            raise missing_transformers("the Qwen3-Omni audio tower") from e
        folder = Path(folder)
        hf = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        thinker = thinker_config(hf)
        audio = thinker["audio_config"]
        self.audio_token_id = thinker["audio_token_id"]
        self.n_window = audio.get("n_window", 50)
        settings = {"feature_size": audio.get("num_mel_bins", 128), "sampling_rate": SAMPLE_RATE}
        saved = folder / "preprocessor_config.json"
        if saved.is_file():
            stored = json.loads(saved.read_text(encoding="utf-8"))
            settings.update({k: stored[k] for k in ("feature_size", "hop_length", "n_fft", "chunk_length")
                             if k in stored})
        self.features = WhisperFeatureExtractor(**settings)
        self.tower = None
        if with_tower:
            from hepta.interop.hf_load import checkpoint_dtype, load_tower

            tower = Qwen3OmniMoeAudioEncoder(Qwen3OmniMoeAudioEncoderConfig(**audio)).to(dtype or checkpoint_dtype(hf))
            self.tower = load_tower(folder, tower, ("thinker.audio_tower.", "audio_tower."), "audio tower").to(device)

    def clip(self, wave: np.ndarray) -> AudioItem:
        """A 16 kHz clip as log-mel features and its length in audio tokens."""
        out = self.features(np.asarray(wave, dtype=np.float32), sampling_rate=SAMPLE_RATE, padding=True,
                            truncation=False, return_attention_mask=True, return_tensors="pt")
        frames = int(out["attention_mask"][0].sum())
        return AudioItem(out["input_features"][0, :, :frames], audio_tokens(frames, self.n_window))

    def max_seconds(self, max_tokens: int) -> float:
        """The longest clip whose audio tokens fit `max_tokens` (feature frames come 100 a second)."""
        return max_tokens / audio_tokens(100, self.n_window)

    def expand(self, text: str, items: Sequence[AudioItem]) -> str:
        """The rendered chat with each clip's single <|audio_pad|> grown to its length."""
        remaining = list(items)

        def grow(match: re.Match) -> str:
            if not remaining:
                raise HeptaError("the chat holds more audio places than clips were sent")
            return AUDIO_PAD * remaining.pop(0).tokens

        expanded = re.sub(re.escape(AUDIO_PAD), grow, text)
        if remaining:
            raise HeptaError(f"{len(remaining)} audio clip(s) have no place in the chat's template")
        return expanded

    @torch.no_grad()
    def visual_input(self, prompts: Sequence[Sequence[int]], items: Sequence[Sequence[AudioItem]],
                     length: int | None = None) -> VisualInput:
        """The clips' features in place of a right-padded batch's audio placeholders; plain positions."""
        length = length or max(len(p) for p in prompts)
        ids_BT = torch.tensor([list(p) + [0] * (length - len(p)) for p in prompts])
        real_BT = torch.arange(length)[None, :] < torch.tensor([len(p) for p in prompts])[:, None]
        mask = (ids_BT == self.audio_token_id) & real_BT
        positions = torch.arange(length).expand(3, len(prompts), -1)
        offsets = torch.zeros(len(prompts), dtype=torch.long)
        clips = [item for sequence in items for item in sequence]
        if not clips:
            return VisualInput(mask, torch.zeros(0), positions, offsets, [])
        weight = next(self.tower.parameters())
        features = torch.cat([clip.features_MF for clip in clips], dim=1).to(weight.device, weight.dtype)
        lengths = torch.tensor([clip.features_MF.shape[1] for clip in clips], device=weight.device)
        embeds = self.tower(features, feature_lens=lengths, return_dict=True).last_hidden_state
        if int(mask.sum()) != embeds.shape[0]:
            raise HeptaError(f"the prompts hold {int(mask.sum())} audio placeholders but the clips give "
                             f"{embeds.shape[0]} features; each clip's placeholders must match its length")
        return VisualInput(mask, embeds, positions, offsets, [])

    def prefill_bytes(self, prompt_tokens: int) -> int:
        """An upper bound of what one prefill of `prompt_tokens` tokens (all audio, at worst) holds for audio: about
        8 feature frames per token through the tower's convolutions and layers, and the features the model reads."""
        config = self.tower.config
        element = next(self.tower.parameters()).element_size()
        frames = 8 * prompt_tokens
        convolutions = frames * config.num_mel_bins * config.downsample_hidden_size * element
        layers = prompt_tokens * (config.encoder_ffn_dim + 4 * config.d_model) * element
        return convolutions + layers + prompt_tokens * config.output_dim * element
