"""`hepta.load`: one call for a hepta model folder or a supported Hugging Face folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from hepta import checkpoint
from hepta.errors import HeptaError
from hepta.interop import SUPPORTED_TYPES, HFTokenizer, load_hf
from hepta.modality.codec import ImageCodec
from hepta.modality.audio_codec import AudioCodec
from hepta.modality.audio_tokenizer import load_audio_tokenizer
from hepta.modality.image_tokenizer import load_image_tokenizer
from hepta.model import Transformer
from hepta.tokenizer import TextTokenizer, Tokenizer


def load(path: str | Path, device: str | torch.device = "cpu", allow_pickle: bool = False,
         dtype: torch.dtype | None = None) -> Transformer:
    """Open a model folder (hepta's own, or Hugging Face's for the supported types) in eval mode.

    Pickle weights (.bin) are refused unless `allow_pickle`, and then read with weights_only=True.
    A Hugging Face folder keeps its stored dtype unless `dtype` is given.
    """
    folder = Path(path)
    config = folder / checkpoint.CONFIG_FILE
    if folder.is_dir() and config.is_file():
        try:
            model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type", "hepta")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            model_type = "hepta"  # let the hepta reader report the broken file
        if model_type != "hepta":
            if model_type not in SUPPORTED_TYPES:
                raise HeptaError(f"{config} describes a {model_type!r} model; hepta loads hepta folders and "
                                 f"Hugging Face folders of type {', '.join(SUPPORTED_TYPES)}")
            return load_hf(folder, allow_pickle=allow_pickle, dtype=dtype).to(device)
    model = checkpoint.load_hepta_folder(folder, device)
    return model if dtype is None else model.to(dtype)


def load_tokenizer(path: str | Path) -> TextTokenizer:
    """The tokenizer of a model folder: hepta's own, or a Hugging Face one with its chat template."""
    folder = Path(path)
    try:
        model_type = json.loads((folder / checkpoint.CONFIG_FILE).read_text(encoding="utf-8")).get("model_type")
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        model_type = "hepta"
    # a hepta folder converted from Hugging Face keeps that tokenizer (and its tokenizer_config.json)
    hf_tokenizer = model_type in SUPPORTED_TYPES or (folder / "tokenizer_config.json").is_file()
    return HFTokenizer(folder) if hf_tokenizer else Tokenizer.load(folder)


def _model_type(folder: Path) -> str | None:
    try:
        return json.loads((folder / checkpoint.CONFIG_FILE).read_text(encoding="utf-8")).get("model_type")
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None


def load_vision(path: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"):
    """The encoder of a model that reads media through one beside its language model (Qwen3-VL-MoE's vision
    tower, Qwen3-Omni-MoE's audio tower), with its preprocessor, on `device`, or None: what the engine runs at
    prefill."""
    model_type = _model_type(Path(path))
    if model_type == "qwen3_vl_moe":
        from hepta.interop.qwen3_vl_inputs import Qwen3VLVision

        return Qwen3VLVision(path, dtype, device)
    if model_type in ("qwen3_omni_moe", "qwen3_omni_moe_thinker"):
        from hepta.interop.qwen3_omni_audio import Qwen3OmniAudio

        return Qwen3OmniAudio(path, dtype, device=device)
    return None


def load_vision_preprocessor(path: str | Path):
    """The preprocessor of such a folder, without its tower, or None: what the API process runs on requests."""
    model_type = _model_type(Path(path))
    if model_type == "qwen3_vl_moe":
        from hepta.interop.qwen3_vl_inputs import Qwen3VLPreprocessor

        return Qwen3VLPreprocessor(path)
    if model_type in ("qwen3_omni_moe", "qwen3_omni_moe_thinker"):
        from hepta.interop.qwen3_omni_audio import Qwen3OmniAudio

        return Qwen3OmniAudio(path, with_tower=False)
    return None


def load_image_codec(path: str | Path, tokenizer: TextTokenizer | None = None) -> ImageCodec | None:
    """The image tokenizer of a model folder with its place in the id space, or None for a text-only model."""
    image_tokenizer = load_image_tokenizer(path)
    if image_tokenizer is None:
        return None
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(path)
    if not isinstance(tokenizer, Tokenizer):
        raise HeptaError(f"{path} holds an image tokenizer but not a hepta tokenizer.json with image codes; "
                         "retrain the model with `hepta train --preset omni-tiny`")
    return ImageCodec.of(image_tokenizer, tokenizer)


def load_audio_codec(path: str | Path, tokenizer: TextTokenizer | None = None) -> AudioCodec | None:
    """The audio tokenizer of a model folder with its place in the id space, or None for a model without speech."""
    audio_tokenizer = load_audio_tokenizer(path)
    if audio_tokenizer is None:
        return None
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(path)
    if not isinstance(tokenizer, Tokenizer) or not tokenizer.layout.num_audio_codes:
        raise HeptaError(f"{path} holds an audio tokenizer but not a hepta tokenizer.json with audio codes; "
                         "retrain the model with `hepta train --preset omni-tiny`")
    return AudioCodec.of(audio_tokenizer, tokenizer)
