"""Images and videos into a Qwen3-VL-MoE prompt: pixels to patches, placeholders in the text, multimodal
RoPE positions, and the vision tower's features as a `VisualInput` for hepta's `Transformer`.

Pixels go through transformers' own Qwen2-VL image processor (its PIL backend: no torchvision), so
resizing and normalisation are the released model's. A video takes the same path frame by frame;
each two consecutive frames (`temporal_patch_size`) then share one patch, their two copies of the
time axis filled from the two frames, as the video processor would fill them. The prompt writes
each pair as `<T seconds><|vision_start|><|video_pad|>...<|vision_end|>`, T the mean of the pair's
times, as Qwen3-VL's processor does; an image as `<|vision_start|><|image_pad|>...<|vision_end|>`.

Positions (`positions`): text advances all three rows by one per token; an image or one frame pair of
h x w merged patches gets time = start and height/width = start + row/column, and the text after it
starts at start + max(h, w). The sequence's last position + 1 - its length is its RoPE offset for
decoding.

Dims: P patches (before merging), N placeholder tokens, D the language model's width.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from hepta.errors import HeptaError
from hepta.model.transformer import VisualInput

IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"


@dataclass
class VisionItem:
    """One image, or one video, ready for the vision tower."""

    kind: str  # "image" | "video"
    pixels_PX: torch.Tensor  # flattened patches
    grid_thw: tuple[int, int, int]  # in patches: time (frame pairs), height, width
    seconds: list[float] = field(default_factory=list)  # video: the time of each frame pair


class Qwen3VLPreprocessor:
    """Pixels and prompt layout of one Qwen3-VL-MoE folder."""

    def __init__(self, folder: str | Path):
        try:
            from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
        except ImportError as e:
            from hepta.interop.qwen3_vl import missing_transformers

            raise missing_transformers("the Qwen3-VL image processor") from e
        folder = Path(folder)
        hf = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        vision = hf["vision_config"]
        self.merge = vision.get("spatial_merge_size", 2)
        self.temporal = vision.get("temporal_patch_size", 2)
        self.image_token_id, self.video_token_id = hf["image_token_id"], hf["video_token_id"]
        settings = {"patch_size": vision.get("patch_size", 16), "merge_size": self.merge,
                    "temporal_patch_size": self.temporal, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
        saved = folder / "preprocessor_config.json"
        if saved.is_file():  # the released processor's resizing bounds and normalisation
            stored = json.loads(saved.read_text(encoding="utf-8"))
            settings.update({k: stored[k] for k in ("size", "image_mean", "image_std", "patch_size", "merge_size",
                                                     "temporal_patch_size") if k in stored})
        self.processor = Qwen2VLImageProcessorPil(**settings)

    # --- pixels ---------------------------------------------------------------------------------

    def image(self, image) -> VisionItem:
        """A PIL image as patches."""
        out = self.processor(images=[image.convert("RGB")], return_tensors="pt")
        return VisionItem("image", out["pixel_values"], tuple(int(n) for n in out["image_grid_thw"][0]))

    def video(self, frames: Sequence, seconds: Sequence[float]) -> VisionItem:
        """Frames (PIL images of one size) shown at `seconds`, as patches of frame pairs."""
        if not frames:
            raise HeptaError("the video has no frames; send a video with at least one frame")
        frames, seconds = list(frames), list(seconds)
        while len(frames) % self.temporal:  # the last pair is completed with its last frame, as transformers does
            frames.append(frames[-1])
            seconds.append(seconds[-1])
        out = self.processor(images=[f.convert("RGB") for f in frames], return_tensors="pt")
        grids = {tuple(int(n) for n in g) for g in out["image_grid_thw"]}
        if len(grids) != 1:
            raise HeptaError("the video's frames differ in size; decode them at one size")
        _, h, w = grids.pop()
        per_frame = out["pixel_values"].view(len(frames), h * w, 3, self.temporal, -1)
        pairs = []
        for first in range(0, len(frames), self.temporal):  # time copy t of a patch comes from frame first + t
            group = per_frame[first:first + self.temporal, :, :, 0]  # [temporal, P, C, patch*patch]
            pairs.append(group.permute(1, 2, 0, 3).reshape(h * w, -1))
        times = [(seconds[i] + seconds[i + self.temporal - 1]) / 2 for i in range(0, len(seconds), self.temporal)]
        return VisionItem("video", torch.cat(pairs), (len(pairs), h, w), times)

    # --- the prompt ------------------------------------------------------------------------------

    def tokens(self, item: VisionItem) -> int:
        """Placeholder tokens of one image, or of one frame pair of a video."""
        _, h, w = item.grid_thw
        return h * w // self.merge ** 2

    def expand(self, text: str, items: Sequence[VisionItem]) -> str:
        """The rendered chat with each image's and video's single placeholder grown to its full layout."""
        pattern = re.compile(re.escape(VISION_START) + f"({re.escape(IMAGE_PAD)}|{re.escape(VIDEO_PAD)})"
                             + re.escape(VISION_END))
        remaining = list(items)

        def grow(match: re.Match) -> str:
            if not remaining:
                raise HeptaError("the chat holds more image or video places than images and videos were sent")
            item = remaining.pop(0)
            kind = "image" if match.group(1) == IMAGE_PAD else "video"
            if item.kind != kind:
                raise HeptaError(f"the chat's next media place is for a {kind}, but the next media sent is a "
                                 f"{item.kind}")
            if kind == "image":
                return VISION_START + IMAGE_PAD * self.tokens(item) + VISION_END
            return "".join(f"<{t:.1f} seconds>" + VISION_START + VIDEO_PAD * self.tokens(item) + VISION_END
                           for t in item.seconds)

        expanded = pattern.sub(grow, text)
        if remaining:
            raise HeptaError(f"{len(remaining)} image(s) or video(s) have no place in the chat's template")
        return expanded

    def positions(self, ids: Sequence[int], items: Sequence[VisionItem]) -> tuple[torch.Tensor, int]:
        """Multimodal RoPE positions [3, T] of a prompt, and its RoPE offset for decoding."""
        chunks = [(item.grid_thw[1], item.grid_thw[2]) for item in items for _ in range(item.grid_thw[0])]
        ids_T = torch.tensor(ids)
        visual_T = (ids_T == self.image_token_id) | (ids_T == self.video_token_id)
        rows, start, chunk, t = [], 0, 0, 0
        while t < len(ids):
            if not visual_T[t]:
                run = t
                while run < len(ids) and not visual_T[run]:
                    run += 1
                rows.append(torch.arange(start, start + run - t).expand(3, -1))
                start += run - t
                t = run
                continue
            if chunk >= len(chunks):
                raise HeptaError("the prompt holds more image or video placeholders than the media sent fill")
            h, w = (n // self.merge for n in chunks[chunk])
            grid_h, grid_w = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            rows.append(torch.stack([torch.full((h * w,), start), grid_h.flatten() + start, grid_w.flatten() + start]))
            start += max(h, w)
            chunk += 1
            t += h * w
        positions = torch.cat(rows, dim=1) if rows else torch.zeros(3, 0, dtype=torch.long)
        return positions, int(positions.max()) + 1 - len(ids) if len(ids) else 0

    # --- features --------------------------------------------------------------------------------

    @torch.no_grad()
    def visual_input(self, tower: torch.nn.Module, prompts: Sequence[Sequence[int]],
                     items: Sequence[Sequence[VisionItem]], length: int | None = None) -> VisualInput:
        """The VisualInput of a right-padded batch of prompts (`length` tokens, default the longest), each with
        its own images and videos in order; a prompt without media has plain positions."""
        length = length or max(len(p) for p in prompts)
        positions = torch.zeros(3, len(prompts), length, dtype=torch.long)
        offsets = torch.zeros(len(prompts), dtype=torch.long)
        mask = torch.zeros(len(prompts), length, dtype=torch.bool)
        flat = [item for sequence in items for item in sequence]
        for b, (ids, media) in enumerate(zip(prompts, items)):
            positions[:, b, :len(ids)], offsets[b] = self.positions(ids, media)
            positions[:, b, len(ids):] = positions[:, b, len(ids) - 1:len(ids)] + torch.arange(1, length - len(ids) + 1)
            ids_T = torch.tensor(ids)
            mask[b, :len(ids)] = (ids_T == self.image_token_id) | (ids_T == self.video_token_id)
        if not flat:
            return VisualInput(mask, torch.zeros(0), positions, offsets, [])
        weight = next(tower.parameters())
        pixels = torch.cat([item.pixels_PX for item in flat]).to(weight.device, weight.dtype)
        grids = torch.tensor([item.grid_thw for item in flat], device=weight.device)
        out = tower(pixels, grid_thw=grids, return_dict=True)
        if int(mask.sum()) != out.pooler_output.shape[0]:
            raise HeptaError(f"the prompts hold {int(mask.sum())} image and video placeholders but the media "
                             f"give {out.pooler_output.shape[0]} features; each placeholder run must match its media")
        return VisualInput(mask, out.pooler_output, positions, offsets, list(out.deepstack_features))


class Qwen3VLVision:
    """What an engine needs to prefill prompts with images and videos: the preprocessor and the vision tower."""

    def __init__(self, folder: str | Path, dtype: torch.dtype | None = None, device: torch.device | str = "cpu"):
        from hepta.interop.qwen3_vl import load_vision_tower

        self.preprocessor = Qwen3VLPreprocessor(folder)
        self.tower = load_vision_tower(folder, dtype).to(device)

    def visual_input(self, prompts: Sequence[Sequence[int]], items: Sequence[Sequence[VisionItem]],
                     length: int | None = None) -> VisualInput:
        return self.preprocessor.visual_input(self.tower, prompts, items, length)

    def prefill_bytes(self, prompt_tokens: int) -> int:
        """An upper bound of what one prefill of `prompt_tokens` tokens (all of them placeholders, at worst) holds
        for vision: merge^2 patches per placeholder through the tower (its widest activation, the MLP's, plus
        the residual stream and attention's q, k and v), and the merged and DeepStack features the model reads."""
        config = self.tower.config
        element = next(self.tower.parameters()).element_size()
        patches = prompt_tokens * self.preprocessor.merge ** 2
        tower = patches * (config.intermediate_size + 4 * config.hidden_size) * element
        features = prompt_tokens * config.out_hidden_size * (1 + len(config.deepstack_visual_indexes)) * element
        return tower + features
