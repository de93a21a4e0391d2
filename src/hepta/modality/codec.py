"""Pixels <-> span ids for one model: its image tokenizer and where its codes sit in the id space."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from hepta.modality.chat import VideoCodes, image_vocab
from hepta.modality.image_span import ImageVocab
from hepta.modality.image_tokenizer import ImageTokenizer
from hepta.modality.video_span import StampForm, changes_only
from hepta.tokenizer import Tokenizer


@dataclass
class ImageCodec:
    tokenizer: ImageTokenizer
    vocab: ImageVocab

    @classmethod
    def of(cls, image_tokenizer: ImageTokenizer, text_tokenizer: Tokenizer) -> "ImageCodec":
        return cls(image_tokenizer, image_vocab(text_tokenizer, image_tokenizer.config.grid_size))

    @property
    def image_size(self) -> int:
        return self.tokenizer.config.image_size

    @property
    def channels(self) -> int:
        return self.tokenizer.config.channels

    def codes(self, pixels_NPSS: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Images [N, P, S, S] in [0, 1] -> code grids [N, g, g]."""
        return self.tokenizer.encode(torch.as_tensor(np.ascontiguousarray(pixels_NPSS), dtype=torch.float32))

    def video(self, pixels_NPSS: np.ndarray, times: Sequence[float], with_time: bool = True,
              stamps: StampForm = StampForm.TEXT) -> VideoCodes:
        """Sampled frames [N, P, S, S] and their times -> a video part, each frame through the image
        tokenizer and only the frames that show something new kept; the timestamps as the model reads them."""
        return VideoCodes(*changes_only(self.codes(pixels_NPSS), times), with_time, stamps=stamps)

    def pixels(self, codes_Ngg: torch.Tensor) -> np.ndarray:
        """Code grids [N, g, g] -> images [N, P, S, S] in [0, 1]."""
        return self.tokenizer.decode(codes_Ngg).numpy()

    def images_in(self, ids: Sequence[int]) -> list[np.ndarray]:
        """Every complete image span in `ids`, decoded to pixels [P, S, S]."""
        grids = self.vocab.find_spans(ids)
        return list(self.pixels(torch.stack(grids))) if grids else []

    def open_span(self, prompt_ids: Sequence[int]) -> list[int]:
        """The ids of an image span the prompt leaves open (a prompt ending in <|image_start|> asks for
        an image, whose span then starts in the prompt and ends in the answer)."""
        back = self.vocab.open_span_position(prompt_ids)
        return list(prompt_ids[-back:]) if back else []

    def answer_images(self, prompt_ids: Sequence[int], token_ids: Sequence[int]) -> list[np.ndarray]:
        """Every complete image of an answer to `prompt_ids`, decoded to pixels [P, S, S]."""
        return self.images_in(self.open_span(prompt_ids) + list(token_ids))
